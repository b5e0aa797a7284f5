"""Creates the gateway's generated files at package installation, as the service user.

postinst runs this with the package's own interpreter
(`/usr/lib/sip-push-gateway/bin/python /usr/share/sip-push-gateway/prepare_state.py CONFIG`)
after dropping to the user sip-push-gateway, so every file is owned by the user that will
read it. It creates what is missing and changes nothing that exists:
- the store's AES-256 key (mode 0600), in the gateway's own format;
- the self-signed certificate of the device API, when no certificate is configured.
Both would also be created at the service's first start; doing it here lets the operator
see the certificate's fingerprint at installation, and makes the key's creation a
packaging step rather than a side effect of the first request.

A config that does not load is reported and left to the operator (exit 0): the package
must stay installable so that the operator can fix it. Uses only the gateway package.
"""

import sys

from gateway import config as configuration, tls
from gateway.errors import ConfigError
from gateway.store.crypto import SecretBox


def main(path: str) -> int:
    try:
        config = configuration.load(path)
    except ConfigError as exc:
        print(f"sip-push-gateway: not preparing state: {exc}", file=sys.stderr)
        return 0
    SecretBox.load_or_create(config.store.key_file)
    if not config.device_api.tls_cert_file:
        cert, _, created = tls.ensure_self_signed(config.state_dir)
        if created:
            fingerprint = tls.fingerprint(cert.read_bytes())
            print(f"sip-push-gateway: created a self-signed certificate {cert}")
            print(f"sip-push-gateway: its SHA-256 fingerprint: {fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
