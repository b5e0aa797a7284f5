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
