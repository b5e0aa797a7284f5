"""Hypothesis fuzz of the API bodies: whatever arrives, the answer is a success or a 4xx
JSON error, never a 5xx."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import app_auth, create_body

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# any text, lone surrogates and NULs included, written as JSON escapes
wild_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)


def paths(node, prefix=()):
    """Every key path inside a JSON document."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


BODY_PATHS = [p for p in paths(create_body()) if p]


@st.composite
def mutated_bodies(draw):
    body = copy.deepcopy(create_body())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(BODY_PATHS))
        parent = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "text", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(json_values)
            elif action == "text":
                parent[path[-1]] = draw(wild_text)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced the path
    return json.dumps(body, allow_nan=True).encode()


@st.composite
def plausible_bodies(draw):
    """The right shape with any text in it, to get past the schema into the service."""
    uri = st.builds(lambda s, t: f"{s}:{t}", st.sampled_from(["sip", "sips"]), wild_text)
    body = create_body(
        device_id=draw(wild_text),
        aor=draw(uri),
        auth_username=draw(wild_text),
        password=draw(wild_text),
        registrar=draw(uri),
        display_name=draw(wild_text),
    )
    body["push"][0]["token"] = draw(wild_text)
    body["push"][0]["topic"] = draw(wild_text)
    return json.dumps(body).encode()


bodies = mutated_bodies() | plausible_bodies() | json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=300)


async def assert_not_5xx(resp):
    text = await resp.text()
    assert resp.status < 500, text
    if resp.status >= 400:
        error = json.loads(text)["error"]
        assert set(error) == {"code", "message"}
        assert "Traceback" not in text


@FUZZ
@given(body=bodies)
async def test_fuzz_create(gw, body):
    headers = {**app_auth(), "Content-Type": "application/json"}
    await assert_not_5xx(await gw.client.post("/v1/instances", data=body, headers=headers))


@FUZZ
@given(body=bodies, target=st.sampled_from(["patch", "mode", "refresh"]))
async def test_fuzz_instance_requests(gw, body, target):
    inst = getattr(gw, "_fuzz_instance", None)
    if inst is None or await gw.store.get_instance(inst["id"]) is None:
        inst = gw._fuzz_instance = await gw.create()
    headers = {"Authorization": f"Bearer {inst['secret']}", "Content-Type": "application/json"}
    url = f"/v1/instances/{inst['id']}"
    method, path = {"patch": ("PATCH", url), "mode": ("PUT", url + "/mode"),
                    "refresh": ("POST", url + "/refresh")}[target]
    await assert_not_5xx(await gw.client.request(method, path, data=body, headers=headers))


@FUZZ
@given(patch=st.fixed_dictionaries(
    {}, optional={"account": st.fixed_dictionaries(
                      {}, optional={"password": wild_text, "display_name": wild_text}),
                  "push": st.lists(st.fixed_dictionaries(
                      {"provider": st.sampled_from(["apns", "fcm"]), "token": wild_text},
                      optional={"usage": st.sampled_from(["call", "other"]), "topic": wild_text}),
                      max_size=3)}))
async def test_fuzz_plausible_patch(gw, patch):
    inst = getattr(gw, "_fuzz_instance", None)
    if inst is None:
        inst = gw._fuzz_instance = await gw.create()
    resp = await gw.client.patch(f"/v1/instances/{inst['id']}", data=json.dumps(patch),
                                 headers={"Authorization": f"Bearer {inst['secret']}",
                                          "Content-Type": "application/json"})
    await assert_not_5xx(resp)

