"""Scale, bounded: 20,000 stored instances registered with Kamailio over UDP (digest auth,
full REGISTER/401/REGISTER/200 each) within 60 seconds of the gateway's start, every one
confirmed in Kamailio's location table; resident memory per instance reported."""

import asyncio
import os
import time

import pytest

from gateway.app import Gateway
from gateway.registrations import contact_token
from tests.support.instances import make_instance
from tests.support.registrar import AuthRegistrar

from .conftest import gateway_config, need_kamailio

pytestmark = [pytest.mark.kamailio, pytest.mark.slow]

COUNT = int(os.environ.get("REGISTRATION_SCALE_COUNT", "20000"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(240)
async def test_twenty_thousand_instances_over_udp(tmp_path):
    need_kamailio()
    # debug=0: no log line per REGISTER (they would cost Kamailio more than the auth)
    kam = AuthRegistrar(tmp_path / "kamailio", shm_mb=512, children=4, debug=0).start()
    config = gateway_config(tmp_path, kam.ca_file, rate=600.0, burst=50, t1=0.5, t2=4.0,
                            in_flight=100)
    gateway = None
    try:
        # the instances as a previous run left them: stored, in the background
        from gateway.store import open_store

        store = open_store(config.store.path, config.store.key_file)
        await store.open()
        registrar = f"sip:127.0.0.1:{kam.udp_port};transport=udp"
        for n in range(COUNT):
            user = f"s{n}"
            await store.put_instance(make_instance(
                store.secret_box, n, password=kam.password(user), aor=f"sip:{user}@{kam.domain}",
                auth_username=user, registrar=registrar, reg_expires=3600,
                app_id="demo", registered_until=None))
        await store.close()

        rss_before = rss_bytes()
        gateway = Gateway(config)
        started = time.monotonic()
        await gateway.start()
        clients = gateway.registrations.clients
        assert len(clients) == COUNT
        while time.monotonic() - started < 60:
            if all(c.state == "registered" for c in clients.values()):
                break
            await asyncio.sleep(0.5)
        took = time.monotonic() - started
        states = {}
        for client in clients.values():
            states[client.state] = states.get(client.state, 0) + 1
        assert states == {"registered": COUNT}, states
        rss_after = rss_bytes()

        table = await asyncio.to_thread(kam.all_contacts)
        missing = [c.key for c in clients.values()
                   if not any(contact_token(c.key) in uri for uri in table.get(c.aor[4:].split("@")[0], []))]
        assert not missing, f"{len(missing)} not in Kamailio's location table"
        per_instance = (rss_after - rss_before) / COUNT
        print(f"\n{COUNT} instances registered in {took:.1f}s "
              f"({COUNT / took:.0f}/s); resident memory per instance: {per_instance / 1024:.1f} KiB "
              f"(RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB)")
        assert took < 60
    finally:
        if gateway is not None:
            await gateway.stop()
        kam.stop()
