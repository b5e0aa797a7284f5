"""Secrets at rest: AES-256-GCM sealing of the SIP password, and the hashes that stand in
for the device secret.

- `SecretBox` holds the 32-byte key read from a key file (mode 0600, created on first start
  when missing). `seal()` puts a random 12-byte nonce in front of the ciphertext; the
  associated data binds a ciphertext to its instance id, so a sealed password copied into
  another row does not open.
- The device secret is never stored: `digest_ha1()` gives the HA1 the SIP digest check
  needs (RFC 2617/8760), `bearer_hash()` the SHA-256 the API compares bearer tokens
  against. The secret is random and long, so a fast hash is enough (no password stretching).
- `same_digest()` compares hashes in constant time.

Depends on `cryptography` and `gateway.errors` only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import ConfigError, SealError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

_HA1_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class SecretBox:
    """AES-256-GCM with one key. Instances never expose the key."""

    __slots__ = ("_aead", "key_path")

    def __init__(self, key: bytes, key_path: str | None = None):
        if len(key) != KEY_SIZE:
            raise ConfigError(f"an AES-256 key is {KEY_SIZE} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.key_path = key_path

    def __repr__(self) -> str:
        return f"SecretBox(key_path={self.key_path!r})"

    @classmethod
    def load_or_create(cls, key_path: str | os.PathLike[str]) -> SecretBox:
        """Read the key file, creating it (32 random bytes, mode 0600) when it is missing.

        A key file that group or others may read, that is not a regular file, or that is
        not exactly 32 bytes is refused with a ConfigError naming the file.
        """
        path = os.fspath(key_path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            key = _create_key_file(path)
            if key is None:  # another process created it meanwhile: use theirs
                return cls.load_or_create(path)
            return cls(key, path)
        except OSError as exc:
            raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"the key file {path} is not a regular file")
            if st.st_mode & 0o077:
                raise ConfigError(
                    f"the key file {path} is readable or writable by group or others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
                )
            key = b""
            if st.st_size == KEY_SIZE:
                key = os.read(fd, KEY_SIZE)
        finally:
            os.close(fd)
        if st.st_size != KEY_SIZE or len(key) != KEY_SIZE:
            raise ConfigError(
                f"the key file {path} holds {st.st_size} bytes, an AES-256 key is {KEY_SIZE} "
                f"(a truncated or foreign file; restore it or the stored passwords cannot be read)"
            )
        return cls(key, path)

    def seal(self, plaintext: str, aad: bytes) -> bytes:
        """Encrypt `plaintext`; the result is nonce + ciphertext + tag."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), aad)

    def open(self, blob: bytes, aad: bytes) -> str:
        """Decrypt what `seal()` made with the same `aad`; SealError when that fails."""
        if len(blob) < NONCE_SIZE + TAG_SIZE:
            raise SealError(f"a sealed value is at least {NONCE_SIZE + TAG_SIZE} bytes, got {len(blob)}")
        try:
            plaintext = self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag:
            raise SealError(
                f"cannot open a sealed value: the key file {self.key_path or '(in memory)'} is "
                "not the one it was sealed with, or the value belongs to another instance or was altered"
            ) from None
        return plaintext.decode("utf-8")


def _create_key_file(path: str) -> bytes | None:
    """Write a new random key to `path` atomically: a 0600 temporary file, fsynced, then
    hard-linked into place, so a crash never leaves a short key file and two processes
    starting at once end up with the same key. None when another process won the race."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = os.urandom(KEY_SIZE)
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create the key file {path}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only remove bits; say it anyway
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
        _fsync_directory(directory)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return key


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def digest_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username:realm:password) in lower-case hex, for SIP digest (MD5 or SHA-256)."""
    try:
        hash_fn = _HA1_HASHES[algorithm.upper()]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {algorithm!r} (MD5 or SHA-256)") from None
    return hash_fn(f"{username}:{realm}:{password}".encode("utf-8")).hexdigest()


def bearer_hash(secret: str) -> str:
    """The SHA-256 hex of a device secret, as stored to check the API's bearer token."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_digest(a: str | bytes, b: str | bytes) -> bool:
    """Compare two hashes (or a presented and a stored value) in constant time."""
    if isinstance(a, str):
        a = a.encode("utf-8")
    if isinstance(b, str):
        b = b.encode("utf-8")
    return hmac.compare_digest(a, b)
