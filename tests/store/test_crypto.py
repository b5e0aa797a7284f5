"""SecretBox (AES-256-GCM with a 0600 key file) and the device secret hashes."""

from __future__ import annotations

import hashlib
import os
import stat
import threading

import pytest

from gateway.errors import ConfigError, SealError
from gateway.store.crypto import KEY_SIZE, NONCE_SIZE, SecretBox, bearer_hash, digest_ha1, same_digest


def test_seal_open_round_trip(box):
    for password in ("s3cret", "", "pässwörd ☎ with spaces", "x" * 5000):
        blob = box.seal(password, aad=b"inst-1")
        assert box.open(blob, aad=b"inst-1") == password
        assert password.encode() not in blob or password == ""


def test_seal_uses_a_fresh_nonce_each_time(box):
    a = box.seal("same", aad=b"id")
    b = box.seal("same", aad=b"id")
    assert a != b
    assert a[:NONCE_SIZE] != b[:NONCE_SIZE]
    assert len(a) == NONCE_SIZE + len("same") + 16


def test_wrong_key_is_a_clear_error(box, tmp_path):
    other = SecretBox.load_or_create(str(tmp_path / "other.key"))
    blob = box.seal("s3cret", aad=b"inst-1")
    with pytest.raises(SealError, match="key file"):
        other.open(blob, aad=b"inst-1")


def test_wrong_aad_does_not_open(box):
    """A sealed password copied onto another instance's row does not decrypt."""
    blob = box.seal("s3cret", aad=b"inst-1")
    with pytest.raises(SealError):
        box.open(blob, aad=b"inst-2")


@pytest.mark.parametrize("damage", ["flip", "truncate", "short"])
def test_altered_ciphertext_does_not_open(box, damage):
    blob = bytearray(box.seal("s3cret", aad=b"inst-1"))
    if damage == "flip":
        blob[NONCE_SIZE + 1] ^= 0x01
    elif damage == "truncate":
        del blob[-1]
    else:
        blob = blob[:10]
    with pytest.raises(SealError):
        box.open(bytes(blob), aad=b"inst-1")


def test_key_file_created_with_mode_0600(tmp_path):
    path = tmp_path / "state" / "store.key"  # the directory is missing too
    old_umask = os.umask(0)  # a careless umask must not widen the key file
    try:
        box = SecretBox.load_or_create(str(path))
    finally:
        os.umask(old_umask)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size == KEY_SIZE
    assert not [name for name in os.listdir(path.parent) if name.endswith(".tmp")]
    # The next start reads the same key back.
    again = SecretBox.load_or_create(str(path))
    assert again.open(box.seal("pw", aad=b"i"), aad=b"i") == "pw"


def test_two_keys_created_apart_differ(tmp_path):
    a = (tmp_path / "a.key", tmp_path / "b.key")
    SecretBox.load_or_create(str(a[0]))
    SecretBox.load_or_create(str(a[1]))
    assert a[0].read_bytes() != a[1].read_bytes()


def test_concurrent_first_starts_agree_on_one_key(tmp_path):
    path = str(tmp_path / "store.key")
    barrier = threading.Barrier(8)
    boxes: list[SecretBox] = []

    def start():
        barrier.wait()
        boxes.append(SecretBox.load_or_create(path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blob = boxes[0].seal("pw", aad=b"i")
    assert len(boxes) == 8
    assert all(b.open(blob, aad=b"i") == "pw" for b in boxes)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "store.key"
    path.write_bytes(os.urandom(KEY_SIZE))
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match=r"chmod 600") as info:
        SecretBox.load_or_create(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_key_file_of_wrong_size_is_refused(tmp_path, size):
    path = tmp_path / "store.key"
    path.write_bytes(os.urandom(size))
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match=f"holds {size} bytes"):
        SecretBox.load_or_create(str(path))


def test_key_path_that_is_a_directory_or_symlink_is_refused(tmp_path):
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        SecretBox.load_or_create(str(directory))
    target = tmp_path / "real.key"
    target.write_bytes(os.urandom(KEY_SIZE))
    os.chmod(target, 0o600)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="cannot read the key file"):
        SecretBox.load_or_create(str(link))


def test_box_repr_does_not_show_the_key(box, key_path):
    with open(key_path, "rb") as f:
        key = f.read()
    assert key.hex() not in repr(box) and str(key) not in repr(box)


def test_digest_ha1_rfc2617_example():
    # RFC 2617 section 3.5: Mufasa / testrealm@host.com / "Circle Of Life"
    assert digest_ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == "939e7578ed9e3c518a452acee763bce9"


def test_digest_ha1_sha256():
    expected = hashlib.sha256(b"inst-1:gateway.test:s3cret").hexdigest()
    assert digest_ha1("inst-1", "gateway.test", "s3cret", "SHA-256") == expected
    assert digest_ha1("inst-1", "gateway.test", "s3cret", "sha-256") == expected
    with pytest.raises(ValueError, match="unsupported digest algorithm"):
        digest_ha1("a", "b", "c", "SHA-512-256")


def test_bearer_hash_is_sha256_hex():
    # FIPS 180-2 test vector for "abc"
    assert bearer_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_same_digest():
    h = bearer_hash("secret")
    assert same_digest(h, bearer_hash("secret"))
    assert same_digest(h.encode(), h)
    assert not same_digest(h, bearer_hash("secreT"))
    assert not same_digest(h, h[:-1])
    assert not same_digest("é", "e")  # non-ASCII input is compared, not rejected
