"""`sip-push-gateway doctor` against Kamailio with digest auth: the real command in a
subprocess, pjsua2 and the gateway's engine side by side, for a good and a bad password."""

import os
import subprocess
import sys

import pytest

from .conftest import need_kamailio
from tests.support.registrar import AuthRegistrar

pytestmark = pytest.mark.kamailio


@pytest.fixture(scope="module")
def kam(tmp_path_factory):
    need_kamailio()
    registrar = AuthRegistrar(tmp_path_factory.mktemp("kamailio"), algorithm="SHA-256").start()
    yield registrar
    registrar.stop()


def doctor(kam, tmp_path, password, transport="udp"):
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
state_dir = "{tmp_path}/state"
[sip]
tls_ca_file = "{kam.ca_file}"
[store]
path = "{tmp_path}/state/gw.db"
key_file = "{tmp_path}/state/store.key"
""")
    env = dict(os.environ, DOCTOR_PW=password)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), "doctor",
         "--aor", f"sip:dave@{kam.domain}",
         "--registrar", f"sip:127.0.0.1:{kam.port(transport)};transport={transport}",
         "--password-env", "DOCTOR_PW", "--expires", "120"],
        capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("transport", ["udp", "tls"])
def test_good_password_both_register(kam, tmp_path, transport):
    done = doctor(kam, tmp_path, kam.password("dave"), transport)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line[:18].strip(): line[18:].split() for line in done.stdout.splitlines()[2:6]}
    assert lines["status"] == ["200", "OK", "200", "OK"], done.stdout
    assert lines["granted expiry"] == ["120", "s", "120", "s"], done.stdout
    assert lines["challenge"] == ["SHA-256", "SHA-256"], done.stdout
    assert "both registered" in done.stdout
    assert kam.password("dave") not in done.stdout + done.stderr
    assert not kam.contacts("dave")  # both unregistered what they registered


def test_bad_password_both_refused(kam, tmp_path):
    done = doctor(kam, tmp_path, "wrong-password-123")
    assert done.returncode == 1, done.stdout + done.stderr
    status = next(line for line in done.stdout.splitlines() if line.startswith("status"))
    assert status.split()[1] == "401" and "401" in status.split()[3:], done.stdout
    assert "an account problem" in done.stdout
    assert "wrong-password-123" not in done.stdout + done.stderr


def test_stored_instance_account(kam, tmp_path):
    """`doctor --instance ID` takes the account (and the sealed password) from the store."""
    import asyncio

    from gateway.store import open_store
    from tests.support.instances import make_instance

    async def store_one():
        store = open_store(str(tmp_path / "state" / "gw.db"), str(tmp_path / "state" / "store.key"))
        await store.open()
        await store.put_instance(make_instance(
            store.secret_box, 7, password=kam.password("gina"), aor=f"sip:gina@{kam.domain}",
            auth_username="gina", registrar=f"sip:127.0.0.1:{kam.tcp_port};transport=tcp"))
        await store.close()

    (tmp_path / "state").mkdir()
    asyncio.run(store_one())
    doctor(kam, tmp_path, "unused")  # writes the config
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(tmp_path / "gateway.toml"), "doctor",
         "--instance", "inst-00007"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "both registered" in done.stdout and "sip:gina@" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(tmp_path / "gateway.toml"), "doctor",
         "--instance", "nope"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 3 and "no instance nope" in missing.stderr
