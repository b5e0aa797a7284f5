"""The config file: strict decoding, errors that name the file and key, the shipped file."""

import tomllib
from pathlib import Path

import msgspec
import pytest

from gateway import cli, config
from gateway.errors import ConfigError

SHIPPED = Path(__file__).parents[2] / "config" / "gateway.toml"


def struct_keys(struct_type, prefix=""):
    """Every key path of a Struct type, descending into nested sections."""
    keys = set()
    for field in msgspec.structs.fields(struct_type):
        path = f"{prefix}{field.encode_name}"
        if isinstance(field.type, type) and issubclass(field.type, config.Section):
            keys |= struct_keys(field.type, path + ".")
        else:
            keys.add(path)
    return keys


def toml_keys(table, prefix=""):
    keys = set()
    for name, value in table.items():
        if isinstance(value, dict):
            keys |= toml_keys(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_shipped_file_lists_every_key_with_its_default():
    raw = tomllib.loads(SHIPPED.read_text())
    assert toml_keys(raw) - {"apps"} == struct_keys(config.Config) - {"apps"}
    shipped = config.load(SHIPPED)
    defaults = config.Config()
    assert msgspec.structs.replace(shipped, apps=[]) == defaults


def test_shipped_file_has_a_first_run_app():
    (app,) = config.load(SHIPPED).apps
    assert app.id == "demo" and app.create_missing_key_files and app.providers() == {"webpush"}


def test_empty_file_gives_defaults():
    assert config.parse("") == config.Config()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("colour = 1", "my.toml: colour: unknown key"),
        ("[sip.device_face]\nbogus = 1", "my.toml: sip.device_face.bogus: unknown key"),
        ('[device_api]\nport = "x"', "my.toml: device_api.port: Expected `int`, got `str`"),
        ("[device_api]\nport = 70000", "my.toml: device_api.port: Expected `int` <= 65535"),
        ("[sip]\nt1 = 0", "my.toml: sip.t1: Expected `float` > 0.0"),
        ("[logging]\nlevel = 'loud'", "my.toml: logging.level: Invalid enum value 'loud'"),
        ("[device_api]\nplain_http = true", "my.toml: device_api: plain_http is only allowed"),
        ('[[apps]]\nid = "x"', "my.toml: apps[0]: an app needs api_key_files or api_key_hashes"),
        ('[[apps]]\nid = "a b"\napi_key_hashes = []', "my.toml: apps[0].id: Expected `str` matching"),
        (
            '[[apps]]\nid = "a"\napi_key_files = ["k"]\n[[apps]]\nid = "a"\napi_key_files = ["k"]',
            "my.toml: app ids must be unique, repeated: a",
        ),
        (
            '[[apps]]\nid = "a"\napi_key_files = ["k"]\n[apps.apns]\ntopic = "t"',
            "my.toml: apps[0].apns: set team_id, key_id and key_file",
        ),
        ("port = ", "my.toml: not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(text, expected):
    with pytest.raises(ConfigError) as err:
        config.parse(text, "my.toml")
    assert str(err.value).startswith(expected), str(err.value)
    assert isinstance(err.value, ValueError)


def test_plain_http_allowed_on_loopback():
    cfg = config.parse("[device_api]\nhost = '127.0.0.1'\nplain_http = true")
    assert cfg.device_api.plain_http


def test_path_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "g.toml"
    path.write_text("[admin]\nport = 9999\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    assert config.load().admin.port == 9999


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_api_key_files_created_and_hashed(tmp_path):
    key_file = tmp_path / "keys" / "app.key"
    app = config.App(id="a", api_key_files=[str(key_file)], create_missing_key_files=True)
    hashes = config.read_api_key_hashes(app)
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert hashes == {config.api_key_hash(key_file.read_text().strip())}
    assert config.read_api_key_hashes(app) == hashes  # not regenerated


def test_missing_api_key_file_is_an_error_unless_allowed(tmp_path):
    app = config.App(id="a", api_key_files=[str(tmp_path / "none")])
    with pytest.raises(ConfigError, match=r"apps\[a\].api_key_files"):
        config.read_api_key_hashes(app)


def test_check_config_command(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text(f'[store]\npath = "{tmp_path}/db"\nkey_file = "{tmp_path}/k"\n')
    assert cli.main(["--config", str(good), "check-config"]) == 0
    assert "OK" in capsys.readouterr().out

    bad = tmp_path / "bad.toml"
    bad.write_text("[device_api]\nprot = 1\n")
    assert cli.main(["check-config", "--config", str(bad)]) == cli.EXIT_CONFIG
    assert f"{bad}: device_api.prot: unknown key" in capsys.readouterr().err

    missing = tmp_path / "missing.toml"
    missing.write_text(f'[device_api]\ntls_cert_file = "{tmp_path}/c.pem"\ntls_key_file = "{tmp_path}/k.pem"\n')
    assert cli.main(["check-config", "--config", str(missing)]) == cli.EXIT_CONFIG
    assert "device_api.tls_cert_file" in capsys.readouterr().err
