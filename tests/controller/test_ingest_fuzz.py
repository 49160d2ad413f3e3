"""Property-based bad input on every uplink channel: the ingest never raises, counts every
rejection, and a good message beside a bad one is still applied."""

from __future__ import annotations

import json
import random

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from controller.ingest import Ingest
from controller.models import RejectedCount
from controller.process import ControllerService
from tests.conftest import settings_for
from tests.controller.test_ingest_broker import heartbeat, wait_for
from tests.factories import make_registry

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)

HB_FIELDS = [
    "seq",
    "ts",
    "uptime_s",
    "volume",
    "amp",
    "speakers_ok",
    "speakers_total",
    "power",
    "net",
    "rssi_dbm",
    "playing",
]


@st.composite
def mutated_heartbeat(draw) -> bytes:
    body = json.loads(heartbeat(1))
    for key in draw(st.lists(st.sampled_from(HB_FIELDS), max_size=4)):
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(json_values)
    return json.dumps(body).encode()


payloads = st.one_of(
    st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()), mutated_heartbeat()
)
channels = st.sampled_from(["heartbeat", "status", "events", "cmd", "bogus"])


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(channel=channels, payload=payloads)
def test_any_payload_on_any_channel_is_applied_or_counted_never_raised(
    ingest_fixture, channel, payload
):
    ing = ingest_fixture
    before = sum(ing.rejected.values()) + sum(ing.accepted.values())
    ing.handle(f"loa/v1/nodes/fuzz-node/{channel}", payload)
    assert sum(ing.rejected.values()) + sum(ing.accepted.values()) == before + 1
    good = heartbeat(ing.accepted["heartbeat"] + 1).encode()
    assert ing.handle("loa/v1/nodes/fuzz-good/heartbeat", good)
    assert ing.fleet.nodes["fuzz-good"].heartbeat.seq == json.loads(good)["seq"]


@pytest.fixture(scope="module")
def ingest_fixture(tmp_path_factory):
    from loa.db import Database
    from loa.settings import Settings

    tmp = tmp_path_factory.mktemp("fuzz")
    db = Database(f"sqlite:///{tmp / 'fuzz.db'}")
    db.create_all()
    make_registry(db, communes={"Xã": {"Thôn": ["fuzz-node", "fuzz-good"]}})
    ing = Ingest(Settings(data_dir=tmp, database_url=db.url), db)
    ing.load_registry()
    ing.handle("loa/v1/nodes/fuzz-good/status", b'{"online": true}')
    return ing


async def test_two_thousand_random_payloads_on_a_real_broker_leave_the_controller_serving(
    mosquitto_broker, settings, db
):
    """The issue's acceptance: 2,000 random payloads on a node's topics, each counted, and a
    good heartbeat right after them is applied."""
    make_registry(db, communes={"Tú Xuyên": {"Thôn Khòn Pát": ["storm-01"]}})
    svc = ControllerService(settings_for(settings, mosquitto_broker), db, client_id="ctl-storm")
    await svc.start()
    await svc.wait_connected()
    rng = random.Random(83)
    sent_bad = 0
    async with aiomqtt.Client("127.0.0.1", mosquitto_broker.port, identifier="storm-01") as c:
        await c.publish("loa/v1/nodes/storm-01/status", b'{"online": true}', qos=1, retain=True)
        for i in range(2000):
            channel = rng.choice(["heartbeat", "status", "events"])
            kind = i % 4
            if kind == 0:
                payload = rng.randbytes(rng.randint(0, 200))
            elif kind == 1:
                payload = b"{" + rng.randbytes(20)
            elif kind == 2:
                body = json.loads(heartbeat(i))
                body[rng.choice(HB_FIELDS)] = rng.choice(["x", -5, None, [], {"a": 1}, 1e309])
                payload = json.dumps(body).encode()
                if channel != "heartbeat":
                    payload = b"[" + payload + b"]"
            else:
                payload = json.dumps([i, "not an object"]).encode()
            await c.publish(f"loa/v1/nodes/storm-01/{channel}", payload, qos=1)
            sent_bad += 1
        await c.publish("loa/v1/nodes/storm-01/heartbeat", heartbeat(4242).encode(), qos=1)
    await wait_for(
        lambda: (
            svc.ingest.fleet.nodes["storm-01"].heartbeat is not None
            and svc.ingest.fleet.nodes["storm-01"].heartbeat.seq == 4242
        ),
        30,
    )
    rejected_total = sum(svc.ingest.rejected.values())
    # status payloads that happen to be valid JSON objects may be accepted only if valid;
    # every one of the 2,000 was either counted as a rejection or validly applied.
    applied = sum(svc.ingest.accepted.values()) - 2  # the retained status and good heartbeat
    assert rejected_total + applied == sent_bad
    assert rejected_total >= 1900
    assert svc.ingest.fleet.nodes["storm-01"].state in ("online", "degraded")
    await svc.stop()
    with db.session() as s:
        stored = sum(r.count for r in s.scalars(select(RejectedCount)))
    assert stored == rejected_total
