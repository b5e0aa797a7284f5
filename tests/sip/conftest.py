"""Fixtures for the SIP parser tests: `twin` runs a test on both parser twins.

The transport, transaction and DNS tests get theirs from tests/support/sipstack.py."""

import pytest

from tests.support.sipstack import (  # noqa: F401 - fixtures and a hook for this folder
    kamailio,
    make_stack,
    pytest_asyncio_loop_factories,
)
from tests.twins import load_both


@pytest.fixture(params=load_both("_sipparse", "sip.parser"))
def twin(request):
    """The parser module under test: gateway.sip.parser ("py") or gateway._sipparse ("c")."""
    return request.param
