"""The few JSON Web Tokens push services want, signed with `cryptography`:

- ES256 (P-256, raw r||s signature): APNs provider tokens and Web Push VAPID.
- RS256 (RSA PKCS#1 v1.5 with SHA-256): Google's OAuth2 JWT-bearer assertion.

Also the base64url helpers the three services share. Depends on cryptography and msgspec.
"""

from __future__ import annotations

import base64

import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signing_input(header: dict, claims: dict) -> bytes:
    return f"{b64url(msgspec.json.encode(header))}.{b64url(msgspec.json.encode(claims))}".encode("ascii")


def sign_es256(key: ec.EllipticCurvePrivateKey, claims: dict, **header_fields: str) -> str:
    header = {"alg": "ES256", "typ": "JWT", **header_fields}
    data = _signing_input(header, claims)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return f"{data.decode('ascii')}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def sign_rs256(key: rsa.RSAPrivateKey, claims: dict, **header_fields: str) -> str:
    header = {"alg": "RS256", "typ": "JWT", **header_fields}
    data = _signing_input(header, claims)
    return f"{data.decode('ascii')}.{b64url(key.sign(data, padding.PKCS1v15(), hashes.SHA256()))}"


def load_ec_p256_key(pem: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from PEM (PKCS#8 or SEC1); ValueError naming `what` otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: not a PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{what}: not an EC P-256 private key")
    return key


def public_point(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed public point (65 bytes) of a P-256 key."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
