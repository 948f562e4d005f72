"""The MQTT link against a real mosquitto and a real SQLite event store; a plain paho client plays the central
server (it validates what arrives and acks up to the highest contiguous seq it has)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set

import paho.mqtt.client as mqtt
import pytest

from edge.attendance import AttendanceEvent, EventType
from edge.config import DeviceConfig
from edge.mqtt import contract
from edge.mqtt.contract import MqttConfig, Topics
from edge.mqtt.link import Link, LinkInfo
from edge.store import EventContext, EventStore, StoredEvent
from tests.support import REPO, Mosquitto, free_port, mosquitto_unavailable, wait_until

pytestmark = pytest.mark.skipif(mosquitto_unavailable() is not None, reason=str(mosquitto_unavailable()))

DEVICE = DeviceConfig(id="box-9", site="lab")
TOPICS = Topics.of("edge/v1", DEVICE.site, DEVICE.id)
INFO = LinkInfo(software_version="1.2.3", model_id="sface-int8", config_hash="abc123", gallery_version=4)


def mqtt_config(port: int, **changes: Any) -> MqttConfig:
    base: Dict[str, Any] = dict(
        host="127.0.0.1",
        port=port,
        keepalive_s=5,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        redeliver_after_s=1.0,
        backlog_rate=2000.0,
        live_window_s=60.0,
    )
    base.update(changes)
    return MqttConfig(**base)


def append(store: EventStore, n: int, stored_at: Optional[float] = None) -> List[StoredEvent]:
    now = datetime.now(timezone.utc)
    events = [
        AttendanceEvent(EventType.ENTRY, f"p{i}", "door-in", now, now, "day", f"t{i}", 0.8, 0.2, 5, 0.9)
        for i in range(n)
    ]
    wall = time.time() if stored_at is None else stored_at
    return store.append(events, EventContext(gallery_version=4, model_id="sface-int8", mono_time=1.0, wall_time=wall))


class Central:
    """The central server's side: subscribes to the box's topics, validates, stores and acks events."""

    def __init__(self, port: int, client_id: str = "", ack: bool = True, ignore_once: Iterable[int] = ()) -> None:
        self.port, self.ack, self.ignore_once = port, ack, set(ignore_once)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not client_id)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.lock = threading.Lock()
        self.events: List[Dict[str, Any]] = []
        self.statuses: List[Dict[str, Any]] = []
        self.retained: List[bool] = []
        self.cameras: List[Dict[str, Any]] = []
        self.results: List[Dict[str, Any]] = []
        self.invalid: List[str] = []
        self.have: Set[int] = set()
        self.up_to = 0
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(f"{TOPICS.root}/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self.on_message

    def __enter__(self) -> Central:
        self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(5), "central did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        schema_of = {
            TOPICS.events: "edge.event/1",
            TOPICS.status: "edge.status/1",
            TOPICS.gallery_result: "edge.gallery_result/1",
        }
        schema = schema_of.get(message.topic, "edge.camera_status/1" if "/cameras/" in message.topic else None)
        if schema is None:
            return  # acks and commands (sent by the tests) come back to this subscription too
        payload = json.loads(message.payload)
        try:
            contract.validate(schema, payload)
        except contract.MessageError as exc:
            self.invalid.append(str(exc))
        with self.lock:
            if schema == "edge.status/1":
                self.statuses.append(payload)
                self.retained.append(bool(message.retain))
            elif schema == "edge.camera_status/1":
                self.cameras.append(payload)
            elif schema == "edge.gallery_result/1":
                self.results.append(payload)
            else:
                self.take_event(payload)

    def take_event(self, payload: Dict[str, Any]) -> None:
        self.events.append(payload)
        seq = payload["seq"]
        if seq in self.ignore_once:
            self.ignore_once.discard(seq)
            return
        self.have.add(seq)
        while self.up_to + 1 in self.have:
            self.up_to += 1
        if self.ack:
            ack = {"schema": "edge.ack/1", "epoch": payload["epoch"], "up_to_seq": self.up_to}
            self.client.publish(TOPICS.ack, json.dumps(ack), qos=1)

    def by_event_id(self) -> Dict[str, List[Dict[str, Any]]]:
        copies: Dict[str, List[Dict[str, Any]]] = {}
        with self.lock:
            for payload in self.events:
                copies.setdefault(payload["event_id"], []).append(payload)
        return copies


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    # as root mosquitto switches to the user "mosquitto", who cannot write pytest's 0700 folders (no persistence)
    mosquitto = Mosquitto(tmp_path / "broker", free_port())
    yield mosquitto
    mosquitto.kill()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "edge.db", DEVICE.id) as events:
        yield events


def open_link(store: EventStore, broker: Mosquitto, **changes: Any) -> Link:
    link = Link(mqtt_config(broker.port, **changes), DEVICE, store.path, INFO)
    link.start()
    return link


def all_acked(store: EventStore) -> bool:
    return store.oldest_unacked() is None


def status_now(port: int) -> Dict[str, Any]:
    """The retained status as a late subscriber sees it."""
    with Central(port) as late:
        assert wait_until(lambda: any(late.retained), 5), "no retained status"
        return late.statuses[late.retained.index(True)]  # not a live one published meanwhile


# ---------------------------------------------------------------- status


def test_online_status_is_retained_and_close_publishes_offline(store: EventStore, broker: Mosquitto) -> None:
    broker.start()
    link = open_link(store, broker)
    try:
        assert wait_until(lambda: link.connected, 5)
        link.publish_camera_status("door-in", "online", "")
        status = status_now(broker.port)
        contract.validate("edge.status/1", status)
        assert status["state"] == "online" and status["boot_id"] == link.boot_id
        assert (status["software_version"], status["model_id"], status["config_hash"]) == (
            "1.2.3",
            "sface-int8",
            "abc123",
        )
        assert status["gallery_version"] == 4
        link.set_gallery_version(5)
        assert wait_until(lambda: status_now(broker.port)["gallery_version"] == 5, 5)
        link.set_config_hash("def456")  # after a SIGHUP reload: the retained status names the running config
        assert wait_until(lambda: status_now(broker.port)["config_hash"] == "def456", 5)
        with Central(broker.port) as late:
            assert wait_until(lambda: bool(late.cameras), 5)
            assert late.cameras[-1]["camera_id"] == "door-in" and late.cameras[-1]["state"] == "online"
    finally:
        link.close()
    status = status_now(broker.port)
    assert (status["state"], status["reason"]) == ("offline", "shutdown")
    assert not link.connected


def test_last_will_says_lost_when_the_process_is_killed(tmp_path: Path, broker: Mosquitto) -> None:
    broker.start()
    helper = [sys.executable, str(REPO / "tests" / "link_process.py"), str(broker.port), str(tmp_path / "k.db")]
    proc = subprocess.Popen([*helper, DEVICE.id, DEVICE.site], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        assert status_now(broker.port)["state"] == "online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert wait_until(lambda: status_now(broker.port)["state"] == "offline", 5)
        status = status_now(broker.port)
        contract.validate("edge.status/1", status)
        assert status["reason"] == "lost"
    finally:
        proc.kill()
        proc.wait(5)


def test_close_without_clean_leaves_the_last_will(store: EventStore, broker: Mosquitto) -> None:
    broker.start()
    link = open_link(store, broker)
    assert wait_until(lambda: link.connected, 5)
    link.close(clean=False)
    assert wait_until(lambda: status_now(broker.port)["state"] == "offline", 5)
    assert status_now(broker.port)["reason"] == "lost"


# ---------------------------------------------------------------- events


def test_every_event_is_delivered_valid_and_acked(store: EventStore, broker: Mosquitto) -> None:
    broker.start()
    with Central(broker.port) as central:
        link = open_link(store, broker)
        try:
            assert wait_until(lambda: link.connected, 5)
            for _ in range(10):
                append(store, 5)
                link.notify_new_events()
            assert wait_until(lambda: all_acked(store), 10), link.outbox_stats()
            stats = link.outbox_stats()
        finally:
            link.close()
    assert central.invalid == []
    assert [e["seq"] for e in central.events] == list(range(1, 51))
    assert all(e["historical"] is False for e in central.events)
    assert [e["prev_seq"] for e in central.events] == [None, *range(1, 50)]
    stored = store.pending(1000)
    assert stored == []
    assert stats == {"epoch": store.epoch, "depth": 0, "oldest_unacked_age_s": None, "last_seq": 50, "acked_up_to": 50}
    assert {e["epoch"] for e in central.events} == {store.epoch}
    rows = store.db.conn.execute("SELECT count(*) FROM events WHERE published_at IS NOT NULL AND acked_at IS NOT NULL")
    assert rows.fetchone()[0] == 50


def test_events_stored_while_the_broker_is_down_go_out_historical_oldest_first(
    store: EventStore, broker: Mosquitto
) -> None:
    broker.start()
    with Central(broker.port, client_id="central-down") as central:
        broker.stop()
        link = open_link(store, broker, live_window_s=0.3, backlog_rate=100.0)
        try:
            append(store, 40)
            link.notify_new_events()
            time.sleep(0.5)
            assert not link.connected
            assert link.outbox_stats()["depth"] == 40
            broker.start()
            assert wait_until(lambda: all_acked(store), 15), link.outbox_stats()
        finally:
            link.close()
    assert central.invalid == []
    first_copies = list(dict.fromkeys(e["seq"] for e in central.events))
    assert first_copies == list(range(1, 41))
    assert all(e["historical"] is True for e in central.events)


def test_broker_restart_mid_stream_loses_nothing(
    store: EventStore, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.mqtt.link")
    broker.start()
    with Central(broker.port, client_id="central-restart") as central:
        link = open_link(store, broker)
        try:
            assert wait_until(lambda: link.connected, 5)
            link.publish_camera_status("door-in", "online", "")
            for i in range(60):
                append(store, 5)
                link.notify_new_events()
                time.sleep(0.01)
                if i == 20:
                    broker.stop()
                    assert wait_until(lambda: not link.connected, 5)
                if i == 40:
                    broker.start()
            assert wait_until(lambda: all_acked(store), 20), link.outbox_stats()
            assert wait_until(lambda: len(central.cameras) >= 2, 5), "camera status not re-sent after reconnect"
        finally:
            link.close()
    assert central.invalid == []
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.mqtt.link"]
    assert [line.split(" ")[0] for line in lines[:2]] == ["connected", "disconnected"]
    assert "(session present: True)" in lines[-1]  # the broker kept the session (and queued the acks)
    copies = central.by_event_id()
    everything = store.events_between(*span())
    assert sorted(copies) == sorted(s.event_id for s in everything) and len(copies) == 300
    for stored in everything:
        prev = stored.seq - 1 if stored.seq > 1 else None
        expected = contract.event_payload(stored, DEVICE.site, prev, False)
        for copy in copies[stored.event_id]:
            assert {**copy, "historical": False} == expected  # a duplicate is a redelivery of the same event


def span() -> tuple[datetime, datetime]:
    now = datetime.now(timezone.utc)
    return now - timedelta(days=1), now + timedelta(days=1)


def test_an_unacked_event_is_redelivered(store: EventStore, broker: Mosquitto) -> None:
    broker.start()
    with Central(broker.port, ignore_once={3}) as central:
        link = open_link(store, broker, redeliver_after_s=0.5)
        try:
            assert wait_until(lambda: link.connected, 5)
            append(store, 5)
            link.notify_new_events()
            assert wait_until(lambda: all_acked(store), 10), link.outbox_stats()
        finally:
            link.close()
    threes = [e for e in central.events if e["seq"] == 3]
    assert [e["historical"] for e in threes] == [False, True]
    attempts = store.db.conn.execute("SELECT seq, publish_attempts FROM events ORDER BY seq").fetchall()
    assert dict(attempts)[3] == 2


# ---------------------------------------------------------------- incoming


BAD = {
    "too large": b"{" + b" " * (10 * 1024 * 1024) + b"}",
    "not JSON": b"\xff not json",
    "wrong schema": json.dumps({"schema": "edge.other/1", "up_to_seq": 1}).encode(),
    "wrong types": json.dumps({"schema": "edge.ack/1", "epoch": "0123456789abcdef", "up_to_seq": "7"}).encode(),
}
BAD_COMMANDS = {
    "too large": BAD["too large"],
    "not JSON": BAD["not JSON"],
    "wrong schema": json.dumps({"schema": "edge.gallery_command/1", "request_id": "r-1", "op": "upsert"}).encode(),
    "wrong types": json.dumps({"schema": "edge.gallery_command/1", "request_id": "r-2", "op": 7}).encode(),
}


def test_bad_messages_are_rejected_with_a_reason_and_delivery_goes_on(
    store: EventStore, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.mqtt.link")
    broker.start()
    with Central(broker.port) as central:
        link = open_link(store, broker)
        try:
            assert wait_until(lambda: link.connected, 5)
            append(store, 3)
            link.notify_new_events()
            for raw in BAD.values():
                central.client.publish(TOPICS.ack, raw, qos=1)
            for raw in BAD_COMMANDS.values():
                central.client.publish(TOPICS.gallery_command, raw, qos=1)
            assert wait_until(lambda: len(central.results) == 4, 10), central.results
            append(store, 3)
            link.notify_new_events()
            assert wait_until(lambda: all_acked(store), 10)
            good = {"schema": "edge.gallery_command/1", "request_id": "r-3", "op": "remove", "person_id": "ann"}
            central.client.publish(TOPICS.gallery_command, json.dumps(good), qos=1)
            command = link.commands.get(timeout=5)
            assert link.connected
        finally:
            link.close()
    assert command == good
    assert link.rejected == {"ack": 4, "gallery_command": 4}
    assert central.invalid == []
    results = sorted(central.results, key=lambda r: str(r["request_id"]))
    assert [(r["request_id"], r["op"], r["status"]) for r in results] == [
        (None, None, "rejected"),
        (None, None, "rejected"),
        ("r-1", "upsert", "rejected"),
        ("r-2", None, "rejected"),
    ]
    reasons = [r["reason"] for r in central.results]
    assert any("byte limit" in r for r in reasons) and any("not UTF-8 JSON" in r for r in reasons)
    assert all(r["gallery_version"] == 4 for r in central.results)
    rejected = [r.getMessage() for r in caplog.records if "rejected a message" in r.getMessage()]
    assert len(rejected) == 7 and all(": " in line and "\n" not in line for line in rejected)  # acks: once per kind
    assert list(dict.fromkeys(e["seq"] for e in central.events)) == list(range(1, 7))


def test_no_broker_no_crash(store: EventStore, tmp_path: Path) -> None:
    link = Link(mqtt_config(free_port()), DEVICE, store.path, INFO)
    link.start()
    try:
        append(store, 2)
        link.notify_new_events()
        link.publish_camera_status("door-in", "online", "")
        link.publish_stats({"schema": "edge.stats/1"})
        time.sleep(0.3)
        assert not link.connected
        assert link.outbox_stats()["depth"] == 2
    finally:
        link.close()
    link.close()  # twice is harmless
    broken = Link(mqtt_config(free_port()), DEVICE, tmp_path / "missing" / "none.db", INFO)
    assert broken.outbox_stats() == {
        "epoch": "0" * 16,
        "depth": 0,
        "oldest_unacked_age_s": None,
        "last_seq": 0,
        "acked_up_to": 0,
    }


def test_an_ack_may_list_single_seqs(store: EventStore, broker: Mosquitto) -> None:
    broker.start()
    with Central(broker.port, ack=False) as central:
        link = open_link(store, broker)
        try:
            assert wait_until(lambda: link.connected, 5)
            append(store, 4)
            link.notify_new_events()
            assert wait_until(lambda: len(central.events) == 4, 5)
            ack = {"schema": "edge.ack/1", "epoch": store.epoch, "up_to_seq": 1, "seqs": [3, 4]}
            central.client.publish(TOPICS.ack, json.dumps(ack), qos=1)
            assert wait_until(lambda: [s.seq for s in store.pending(10)] == [2], 5), store.pending(10)
            assert link.outbox_stats()["acked_up_to"] == 1 and link.outbox_stats()["depth"] == 1
        finally:
            link.close()
