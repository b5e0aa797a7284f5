"""Fixtures for the SIP parser tests: `twin` runs a test on both parser twins."""

import pytest

from tests.twins import load_both


@pytest.fixture(params=load_both("_sipparse", "sip.parser"))
def twin(request):
    """The parser module under test: gateway.sip.parser ("py") or gateway._sipparse ("c")."""
    return request.param
