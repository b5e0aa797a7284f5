"""Fixtures for the push tests: a test CA, signing keys, and the three emulators."""

from __future__ import annotations

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import ApnsCredentials
from tests.support.apns_emulator import ApnsEmulator

TEAM = "TEAM123456"
KEY_ID = "KEY1234567"
BUNDLE = "com.example.phone"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def ca():
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def write_ec_key(path) -> bytes:
    """Write a P-256 key as PKCS#8 PEM (what Apple's .p8 holds); return its public PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def apns_key(tmp_path):
    path = tmp_path / "AuthKey.p8"
    return str(path), write_ec_key(path)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def apns(ca, apns_key, clock):
    emulator = ApnsEmulator(ca, keys={KEY_ID: (TEAM, apns_key[1])}, clock=clock)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def apns_credentials(apns, apns_key):
    return ApnsCredentials(
        topic=BUNDLE, team_id=TEAM, key_id=KEY_ID, key_file=apns_key[0], production_url=apns.url, sandbox_url=apns.url
    )


PROJECT = "demo-project"
CLIENT_EMAIL = "gateway@demo-project.iam.gserviceaccount.com"


@pytest.fixture(scope="session")
def service_account_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def service_account_file(service_account_key, tmp_path):
    import json

    pem = service_account_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "0123abcd",
                "private_key": pem,
                "client_email": CLIENT_EMAIL,
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return str(path)


@pytest.fixture
async def fcm(ca, service_account_key, clock):
    from tests.support.fcm_emulator import FcmEmulator

    public = service_account_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    emulator = FcmEmulator(ca, project_id=PROJECT, client_email=CLIENT_EMAIL, public_key_pem=public, clock=clock)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def fcm_credentials(fcm, service_account_file):
    from gateway.config import FcmCredentials

    return FcmCredentials(
        service_account_file=service_account_file,
        send_url=fcm.url + "/v1/projects/{project_id}/messages:send",
        token_url=fcm.url + "/token",
    )


@pytest.fixture
async def webpush(ca, clock):
    from tests.support.webpush_emulator import WebPushEmulator

    emulator = WebPushEmulator(ca, clock=clock)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def webpush_credentials(tmp_path):
    from gateway.config import WebPushCredentials

    return WebPushCredentials(vapid_key_file=str(tmp_path / "keys" / "vapid.pem"), vapid_subject="mailto:ops@example.com")


def call_payload(expires_at: float, **fields):
    from gateway.push import payloads

    values = dict(
        instance="inst-1",
        call_id="call-1@pbx",
        caller_uri="sip:bob@example.com",
        caller_name="Bob",
        callee="sip:alice@example.com",
        push_id="push-1",
        connect="sips:gw.example.com:5071",
        expires_at=expires_at,
    )
    values.update(fields)
    return payloads.CallPush(**values)
