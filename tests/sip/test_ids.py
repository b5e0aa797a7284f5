"""Random ids from the pooled urandom reader: right length and alphabet, never repeated,
never the same in a forked child as in its parent, bad sizes refused. On both twins:
`gateway.sip.ids` and the compiled pool the compiled SIP modules draw from
(`gateway._ids`)."""

import os

import pytest

from gateway.sip.transaction import MAGIC_COOKIE, new_branch
from tests.twins import load_both


@pytest.fixture(params=load_both("_ids", "sip.ids"))
def random_hex(request):
    return request.param.random_hex


def test_hex_of_the_asked_length_and_unique_across_pool_refills(random_hex):
    ids = [random_hex(10) for _ in range(5000)]  # 50 KB: a dozen refills of the pool
    assert all(len(i) == 20 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    assert len(set(ids)) == len(ids)
    assert len(random_hex(4096)) == 8192


@pytest.mark.parametrize("size", [0, -1, 4097])
def test_bad_sizes_are_refused(random_hex, size):
    with pytest.raises(ValueError):
        random_hex(size)


def test_branches_carry_the_magic_cookie():
    assert new_branch().startswith(MAGIC_COOKIE) and len(new_branch()) == len(MAGIC_COOKIE) + 20


def test_a_forked_child_draws_its_own_bytes(random_hex):
    random_hex(1)  # the pool is filled: the child must not continue from it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, random_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != random_hex(16)
