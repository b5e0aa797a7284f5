"""The app's own small duties."""


def test_systemd_notification_survives_a_vanished_manager(monkeypatch, tmp_path):
    from gateway import app

    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    app._notify_systemd(b"STOPPING=1")  # must not raise: stopping must not fail for this


def test_instance_ids_never_look_like_options():
    from gateway.cli import _parser
    from gateway.instances import new_instance_id

    ids = [new_instance_id() for _ in range(2000)]
    assert all(i[0].isalnum() and len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)
    assert _parser().parse_args(["instances", "show", ids[0]]).id == ids[0]
