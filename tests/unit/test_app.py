"""The app's own small duties."""


def test_systemd_notification_survives_a_vanished_manager(monkeypatch, tmp_path):
    from gateway import app

    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    app._notify_systemd(b"STOPPING=1")  # must not raise: stopping must not fail for this
