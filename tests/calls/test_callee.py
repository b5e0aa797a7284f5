"""The call side's per-instance record (`gateway.calls.Callee`): what an INVITE needs and
nothing more, its shared parts shared, and rebuilt only when something a call needs moved
(a registration state change, written on every refresh, must not churn it)."""

import msgspec

from gateway.calls import Callee, CalleesById
from gateway.registrations import contact_token
from gateway.store.crypto import SecretBox
from gateway.store.records import PushTarget
from tests.support.instances import make_instance


def record(tmp_path, n: int = 0, **fields):
    return make_instance(SecretBox.load_or_create(tmp_path / "key"), n, **fields)


def test_keeps_the_call_targets_and_the_peer_hosts_only(tmp_path):
    rec = record(tmp_path, registrar="sip:Reg.Example.com:5061;transport=tls",
                 outbound_proxy="sip:edge.example.net;lr")
    callee = Callee(rec)
    assert not hasattr(callee, "__dict__")
    assert (callee.id, callee.app_id, callee.mode) == (rec.id, rec.app_id, "background")
    assert [t.usage for t in callee.push] == ["call"]  # the Web Push "other" target is not kept
    assert callee.push[0].token == rec.push[0].token
    assert callee.peers == ("reg.example.com", "edge.example.net")
    assert "secret" not in repr(callee) and rec.push[0].token not in repr(callee)


def test_instances_of_one_registrar_share_their_peer_hosts(tmp_path):
    one, two = Callee(record(tmp_path, 1)), Callee(record(tmp_path, 2))
    assert one.peers is two.peers


def test_an_unparsable_registrar_gives_no_peer_host(tmp_path):
    assert Callee(record(tmp_path, registrar="not a uri")).peers == ()


def test_same_as_ignores_state_but_not_mode_or_call_targets(tmp_path):
    rec = record(tmp_path)
    callee = Callee(rec)
    replace = msgspec.structs.replace
    assert callee.same_as(replace(rec, state="registered", registered_until=1e10, last_error="x"))
    assert not callee.same_as(replace(rec, mode="foreground"))
    other_token = PushTarget(provider="apns", usage="call", token="ab" * 32, environment="production")
    assert not callee.same_as(replace(rec, push=[other_token, rec.push[1]]))
    assert callee.same_as(replace(rec, push=[rec.push[0]]))  # only an "other" target went


def test_by_id_reads_the_token_index(tmp_path):
    rec = record(tmp_path, 3)
    by_token = {contact_token(rec.id): Callee(rec)}
    by_id = CalleesById(by_token)
    assert by_id[rec.id] is by_token[contact_token(rec.id)]
    assert rec.id in by_id and "inst-99999" not in by_id and by_id.get("inst-99999") is None
    assert 5 not in by_id  # not an id at all
    assert list(by_id) == [rec.id] and len(by_id) == 1
    # a token that names another instance (it cannot happen by chance) is not this one
    by_token[contact_token("other")] = by_token[contact_token(rec.id)]
    assert "other" not in by_id
