"""Writes the packaged /etc/sip-push-gateway/gateway.toml from config/gateway.toml.

config/gateway.toml stays the one reference of every key and default; the package only
changes what an installed appliance needs: absolute paths under /var/lib/sip-push-gateway,
and instead of the first-run "demo" app (whose key file the gateway itself would create)
an app "default" whose API key postinst generates in /etc/sip-push-gateway/keys/.

Usage: make-config.py SOURCE_TOML OUTPUT_TOML. Runs at package build time with the system
Python (tomllib), so it depends on nothing but the standard library.
"""

import sys
import tomllib

STATE = "/var/lib/sip-push-gateway"
KEYS = "/etc/sip-push-gateway/keys"

PACKAGED_APPS_INTRO = f"""\
# Apps allowed to use the gateway. The package sets up one app, "default": its API key was
# generated at installation into {KEYS}/default.key
# (mode 0640, root:sip-push-gateway). Build it into your app, or replace the file with
# your own key (16 characters or more), or list more apps; then restart the service.
"""

PACKAGED_APPS = f"""\
[[apps]]
id = "default"
api_key_files = ["{KEYS}/default.key"]

[apps.webpush]
vapid_key_file = "{STATE}/keys/default-vapid.pem"
"""


def packaged(text: str) -> str:
    intro_at = text.index("# Apps allowed to use the gateway.")
    keys_doc_at = text.index("# Keys of an app,")
    apps_at = text.index("[[apps]]")
    if not intro_at < keys_doc_at < apps_at:
        raise ValueError("the apps section of the source config changed its layout")
    head = text[:intro_at]
    head = head.replace(
        "# Relative paths are relative to the directory the gateway is started from.",
        f"# Installed by the Debian package: generated files and data live in {STATE}.",
    )
    head = head.replace('state_dir = "var"', f'state_dir = "{STATE}"')
    head = head.replace('"var/', f'"{STATE}/')
    return head + PACKAGED_APPS_INTRO + text[keys_doc_at:apps_at] + PACKAGED_APPS


def main(source: str, output: str) -> None:
    with open(source, encoding="utf-8") as f:
        text = packaged(f.read())
    config = tomllib.loads(text)  # must still be TOML; the gateway's checks run in deb-test
    leftovers = [line for line in text.splitlines() if '"var' in line]
    if leftovers or config["state_dir"] != STATE or [a["id"] for a in config["apps"]] != ["default"]:
        raise SystemExit(f"make-config: relative paths or demo app left in {source}: {leftovers}")
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: make-config.py SOURCE_TOML OUTPUT_TOML")
    main(sys.argv[1], sys.argv[2])
