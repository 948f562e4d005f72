"""Issue 7: what arrives on the box's inbound topics must not lose an event or stop delivery. Real mosquitto, real
SQLite; the central server is a plain paho client (tests/test_link.py's Central) and a hostile one publishes beside it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List

import paho.mqtt.client as mqtt
import pytest

import edge.mqtt.outbox
from edge.errors import EdgeError
from edge.mqtt import contract
from edge.mqtt.link import Link
from edge.mqtt.outbox import Outbox
from edge.store import EventStore
from tests.support import Mosquitto, free_port, mosquitto_unavailable, wait_until
from tests.test_link import DEVICE, INFO, TOPICS, Central, all_acked, append, mqtt_config, open_link

pytestmark = pytest.mark.skipif(mosquitto_unavailable() is not None, reason=str(mosquitto_unavailable()))

OTHER_EPOCH = "0123456789abcdef"
DYNSEC = next(iter(sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))), Path("/usr/lib/mosquitto_dynamic_security.so"))
"""mosquitto's dynamic-security plugin (Debian's package), in the architecture's library folder."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "broker", free_port())
    yield mosquitto
    mosquitto.kill()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "edge.db", DEVICE.id) as events:
        yield events


def send(client: mqtt.Client, topic: str, body: Any, retain: bool = False) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    client.publish(topic, raw, qos=1, retain=retain).wait_for_publish(5)


def acked_seqs(store: EventStore) -> List[int]:
    return [int(r[0]) for r in store.db.conn.execute("SELECT seq FROM events WHERE acked_at IS NOT NULL ORDER BY seq")]


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


# ---------------------------------------------------------------- item 1: forged and future acks


def test_a_future_or_unpublished_ack_is_refused_whole_and_loses_nothing(
    store: EventStore, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """40 events wait as backlog, sent at 20/s. Forged acks arrive meanwhile: one for every stored seq (most not yet
    published), two far in the future, one listing unpublished seqs. Each is refused whole and logged once per
    kind; nothing is marked delivered until the real central server has the events."""
    caplog.set_level(logging.DEBUG, logger="edge.mqtt.link")
    append(store, 40, stored_at=time.time() - 3600)
    broker.start()
    with Central(broker.port, ack=False) as central:
        link = open_link(store, broker, backlog_rate=20.0, redeliver_after_s=0.5)
        try:
            assert wait_until(lambda: link.connected and len(central.events) >= 2, 5)
            forged = [
                {"schema": "edge.ack/1", "epoch": store.epoch, "up_to_seq": 40},
                {"schema": "edge.ack/1", "epoch": store.epoch, "up_to_seq": 1_000_000},
                {"schema": "edge.ack/1", "epoch": store.epoch, "up_to_seq": 41},
                {"schema": "edge.ack/1", "epoch": store.epoch, "up_to_seq": 0, "seqs": [39, 40]},
            ]
            for ack in forged:
                send(central.client, TOPICS.ack, ack)
            assert wait_until(lambda: link.rejected["ack"] == 4, 5), link.rejected
            assert acked_seqs(store) == []
            assert len(central.events) < 40  # the backlog was still going out: the forgeries named unsent seqs
            central.ack = True
            assert wait_until(lambda: all_acked(store), 20), link.outbox_stats()
        finally:
            link.close()
    assert sorted({e["event_id"] for e in central.events}) == sorted(s.event_id for s in store.events_between(*_span()))
    assert len(warnings_about(caplog, "future seq")) == 1  # two future acks, one warning
    assert len(warnings_about(caplog, "unpublished seq")) == 1
    assert link.failure() is None


def _span() -> tuple[datetime, datetime]:
    now = datetime.now(timezone.utc)
    return now - timedelta(days=1), now + timedelta(days=1)


def test_an_ack_for_another_epoch_is_refused(store: EventStore, broker: Mosquitto) -> None:
    broker.start()
    with Central(broker.port, ack=False) as central:
        link = open_link(store, broker)
        try:
            assert wait_until(lambda: link.connected, 5)
            append(store, 3)
            link.notify_new_events()
            assert wait_until(lambda: len(central.events) == 3, 5)
            assert {e["epoch"] for e in central.events} == {store.epoch}
            assert [e["prev_seq"] for e in central.events] == [None, 1, 2]
            send(central.client, TOPICS.ack, {"schema": "edge.ack/1", "epoch": OTHER_EPOCH, "up_to_seq": 3})
            assert wait_until(lambda: link.rejected["ack"] == 1, 5)
            assert acked_seqs(store) == []
            send(central.client, TOPICS.ack, {"schema": "edge.ack/1", "epoch": store.epoch, "up_to_seq": 3})
            assert wait_until(lambda: all_acked(store), 5)
        finally:
            link.close()


# ---------------------------------------------------------------- item 2: overflowing acks, a dead outbox thread

OVERFLOWING = {
    "1e300": b'{"schema": "edge.ack/1", "epoch": "%s", "up_to_seq": 1e300}',
    "10**20": b'{"schema": "edge.ack/1", "epoch": "%s", "up_to_seq": 100000000000000000000}',
    "2**63 in seqs": b'{"schema": "edge.ack/1", "epoch": "%s", "up_to_seq": 0, "seqs": [9223372036854775808]}',
    "a float": b'{"schema": "edge.ack/1", "epoch": "%s", "up_to_seq": 2.0}',
    "NaN": b'{"schema": "edge.ack/1", "epoch": "%s", "up_to_seq": NaN}',
    "Infinity in seqs": b'{"schema": "edge.ack/1", "epoch": "%s", "up_to_seq": 0, "seqs": [Infinity]}',
    "resend_from 1e300": b'{"schema": "edge.ack/1", "epoch": "%s", "up_to_seq": 0, "resend_from": 1e300}',
    "nested": b'{"schema": "edge.ack/1", "epoch": "%s", "up_to_seq": 0, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


def test_overflowing_and_non_integer_acks_are_refused_and_delivery_goes_on(store: EventStore, broker: Mosquitto) -> None:
    broker.start()
    with Central(broker.port) as central:
        link = open_link(store, broker)
        try:
            assert wait_until(lambda: link.connected, 5)
            append(store, 2)
            link.notify_new_events()
            assert wait_until(lambda: all_acked(store), 10)
            for raw in OVERFLOWING.values():
                send(central.client, TOPICS.ack, raw.replace(b"%s", store.epoch.encode()))
            assert wait_until(lambda: link.rejected["ack"] == len(OVERFLOWING), 10), link.rejected
            append(store, 5)
            link.notify_new_events()
            assert wait_until(lambda: all_acked(store), 10), link.outbox_stats()
            assert link.failure() is None
        finally:
            link.close()
    assert acked_seqs(store) == list(range(1, 8))


@pytest.mark.parametrize("schema", ["edge.ack/1", "edge.event/1", "edge.stats/1"])
def test_every_integer_in_the_outbox_schemas_is_bounded(schema: str) -> None:
    def integers(node: Any, path: str = "") -> Iterator[str]:
        if isinstance(node, dict):
            kinds = node.get("type")
            kinds = kinds if isinstance(kinds, list) else [kinds]
            if ("integer" in kinds or "number" in kinds) and "maximum" not in node:
                yield path
            for key, value in node.items():
                yield from integers(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from integers(value, f"{path}/{i}")

    body = json.loads((contract.SCHEMA_DIR / contract.SCHEMAS[schema]).read_text())
    assert list(integers(body)) == []


def test_a_dead_outbox_thread_is_reported_and_stops_the_daemon(
    store: EventStore, broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.start()

    def broken(self: Outbox, now: float, now_wall: float) -> float:
        raise OverflowError("a bug in the outbox")

    monkeypatch.setattr(Outbox, "step", broken)
    link = open_link(store, broker)
    try:
        assert wait_until(lambda: link.connected, 5)
        append(store, 1)
        link.notify_new_events()
        assert wait_until(lambda: link.failure() is not None, 5)
        assert "OverflowError: a bug in the outbox" in str(link.failure())
    finally:
        link.close()

    import edge.daemon
    from edge.config import load_config

    monkeypatch.setattr(edge.daemon, "open_link", lambda *args: link)
    link._closing = False  # as if still running: the daemon must see the dead thread and stop (no watchdog feed)
    db = tmp_path / "daemon.db"
    config_file = tmp_path / "edge.yml"
    config_file.write_text(f"device:\n  id: {DEVICE.id}\nstorage:\n  database: {db}\ncameras: []\n")
    with pytest.raises(EdgeError, match="outbox thread died: OverflowError"):
        edge.daemon.run(load_config(config_file), threading.Event(), db)


# ---------------------------------------------------------------- item 3c: retained inbound messages


def test_retained_acks_and_commands_are_ignored(
    store: EventStore, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.mqtt.link")
    broker.start()
    with Central(broker.port, ack=False) as central:
        link = open_link(store, broker)
        try:
            assert wait_until(lambda: link.connected, 5)
            append(store, 3)
            link.notify_new_events()
            assert wait_until(lambda: len(central.events) == 3, 5)
        finally:
            link.close()
        ack = {"schema": "edge.ack/1", "epoch": store.epoch, "up_to_seq": 3}
        command = {"schema": "edge.gallery_command/1", "request_id": "r-9", "op": "remove", "person_id": "ann"}
        send(central.client, TOPICS.ack, ack, retain=True)
        send(central.client, TOPICS.gallery_command, command, retain=True)
        # a new session (no queued copies): subscribing, the box gets the retained copies, as after every reconnect
        again = open_link(store, broker, client_id="edge-box-9-new")
        try:
            assert wait_until(lambda: again.rejected == {"ack": 1, "gallery_command": 1}, 5), again.rejected
            time.sleep(0.3)
            assert again.commands.empty() and acked_seqs(store) == []
        finally:
            again.close()
            send(central.client, TOPICS.ack, b"", retain=True)  # clear the retained copies
            send(central.client, TOPICS.gallery_command, b"", retain=True)
    assert len(warnings_about(caplog, "retained")) == 2
    assert central.results == []  # no answer to a retained command either


# ---------------------------------------------------------------- item 7: no heavy work in paho's callbacks


def test_acks_and_commands_are_parsed_on_the_outbox_thread(
    store: EventStore, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge.mqtt.link

    threads: List[str] = []
    real_parse_ack, real_parse = edge.mqtt.link.parse_ack, contract.parse

    def parse_ack(raw: bytes, max_bytes: int) -> Any:
        threads.append(threading.current_thread().name)
        return real_parse_ack(raw, max_bytes)

    def parse(schema_id: str, raw: bytes, max_bytes: int) -> Dict[str, Any]:
        threads.append(threading.current_thread().name)
        return real_parse(schema_id, raw, max_bytes)

    monkeypatch.setattr(edge.mqtt.link, "parse_ack", parse_ack)
    monkeypatch.setattr(contract, "parse", parse)
    broker.start()
    with Central(broker.port) as central:
        link = open_link(store, broker)
        try:
            assert wait_until(lambda: link.connected, 5)
            append(store, 3)
            link.notify_new_events()
            assert wait_until(lambda: all_acked(store), 10)
            send(central.client, TOPICS.gallery_command, {"schema": "edge.gallery_command/1", "op": "remove"})
            assert wait_until(lambda: len(central.results) == 1, 5)
        finally:
            link.close()
    assert len(threads) >= 2 and set(threads) == {"edge-outbox"}
    assert link._acks.maxsize == edge.mqtt.link.MAX_RAW_ACKS and link._raw_commands.maxsize == edge.mqtt.link.MAX_COMMANDS


# ---------------------------------------------------------------- the wall clock set back


def test_redelivery_after_the_wall_clock_was_set_back_is_not_delayed(store: EventStore) -> None:
    """Events published by an earlier run whose clock was an hour ahead: redelivered redeliver_after_s after this
    process started, not in an hour."""
    append(store, 3, stored_at=time.time() - 7200)
    store.mark_published([1, 2, 3], datetime.now(timezone.utc) + timedelta(hours=1))
    sent: List[int] = []

    def publish(stored: Any, historical: bool) -> int:
        sent.append(stored.seq)
        return len(sent)

    started = 1000.0
    outbox = Outbox(store, mqtt_config(1883, redeliver_after_s=0.5), publish, started)
    outbox.step(started + 0.1, time.time())
    assert sent == []  # not yet due: maybe the central server acks them meanwhile
    outbox.step(started + 0.6, time.time())
    assert sent == [1, 2, 3]


# ---------------------------------------------------------------- a subscription the broker refuses


def test_a_refused_subscription_is_logged_and_in_the_status(
    tmp_path: Path, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """mosquitto's ACL file only filters what a subscription delivers; its dynamic-security plugin refuses the
    subscription itself (SUBACK failure), as a broker with per-client subscribe rules does."""
    caplog.set_level(logging.WARNING, logger="edge.mqtt.link")
    if not DYNSEC.is_file():
        pytest.skip(f"{DYNSEC} not installed")
    rules = tmp_path / "dynsec.json"
    deny = {"acltype": "subscribePattern", "topic": TOPICS.ack, "allow": False, "priority": 0}
    access = {"publishClientSend": True, "publishClientReceive": True, "subscribe": True, "unsubscribe": True}
    rules.write_text(json.dumps({
        "defaultACLAccess": access, "clients": [], "groups": [{"groupname": "anon", "roles": [{"rolename": "box"}]}],
        "roles": [{"rolename": "box", "acls": [deny]}], "anonymousGroup": "anon",
    }))  # fmt: skip
    port = free_port()
    extra = f"plugin {DYNSEC}\nplugin_opt_config_file {rules}\n"
    broker = Mosquitto(tmp_path / "acl-broker", port, extra=extra).start()
    statuses: List[Dict[str, Any]] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
    watcher.on_message = lambda c, u, m: statuses.append(json.loads(m.payload)) if m.payload else None
    watcher.connect("127.0.0.1", port)
    watcher.subscribe(TOPICS.status, qos=1)
    watcher.loop_start()
    link = Link(mqtt_config(port), DEVICE, store.path, INFO)
    link.start()
    try:
        assert wait_until(lambda: link.subscription_refused is not None, 5)
        assert TOPICS.ack in link.subscription_refused and TOPICS.gallery_command not in link.subscription_refused
        assert wait_until(lambda: any("subscription refused" in s.get("reason", "") for s in statuses), 5), statuses
        for status in statuses:
            contract.validate("edge.status/1", status)
    finally:
        link.close()
        watcher.loop_stop()
        watcher.disconnect()
        broker.kill()
    assert len([r for r in caplog.records if "subscription refused by the broker" in r.getMessage()]) == 1


# ---------------------------------------------------------------- resend_from: the central server lost its copies


def test_resend_from_is_answered_boundedly_once_a_minute(
    store: EventStore, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge.mqtt.outbox, "RESEND_MAX", 2)
    broker.start()
    with Central(broker.port) as central:
        link = open_link(store, broker)
        try:
            assert wait_until(lambda: link.connected, 5)
            append(store, 5)
            link.notify_new_events()
            assert wait_until(lambda: all_acked(store), 10)
            asked = {"schema": "edge.ack/1", "epoch": store.epoch, "up_to_seq": 0, "resend_from": 2}
            send(central.client, TOPICS.ack, asked)
            assert wait_until(lambda: len(central.events) == 7, 5), [e["seq"] for e in central.events]
            assert wait_until(lambda: all_acked(store), 10)
            send(central.client, TOPICS.ack, {**asked, "resend_from": 4})  # too soon: refused
            assert wait_until(lambda: link.rejected["ack"] == 1, 5)
            beyond = {**asked, "resend_from": 6}  # never stored: refused whole
            send(central.client, TOPICS.ack, beyond)
            assert wait_until(lambda: link.rejected["ack"] == 2, 5)
            time.sleep(0.3)
        finally:
            link.close()
    assert [e["seq"] for e in central.events] == [1, 2, 3, 4, 5, 2, 3]
    assert [e["historical"] for e in central.events[5:]] == [True, True]
    assert acked_seqs(store) == [1, 2, 3, 4, 5]



# ---------------------------------------------------------------- item 5: `edge run` on a lost database


def test_edge_run_refuses_a_lost_database_and_names_init(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edge.cli import main

    db = tmp_path / "edge.db"
    with EventStore(db, "door-box") as events:
        append(events, 2)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    config = tmp_path / "edge.yml"
    config.write_text(f"device:\n  id: door-box\nstorage:\n  database: {db}\ncameras: []\n")
    done = CliRunner().invoke(main, ["--config", str(config), "run"])
    assert done.exit_code == 1 and "edge run --init" in done.output and str(db) in done.output, done.output
    assert "Traceback" not in done.output and not db.exists()
    assert "--init" in CliRunner().invoke(main, ["--config", str(config), "run", "--help"]).output


# ---------------------------------------------------------------- acks of an epoch that ended after lost rows


def test_an_ack_of_an_epoch_that_ended_after_lost_rows_is_applied_up_to_its_end(tmp_path: Path) -> None:
    """The database lost seqs 6..10 (a lost WAL) that the central server has; `--init` goes on in a new epoch from
    seq 6. The central's acks of the old epoch (up to 10) still settle 1..5, once they were published; a seq of the
    new epoch the box never stored is refused."""
    from edge.mqtt.acks import Ack, AckRefused, check_ack

    path = tmp_path / "edge.db"
    with EventStore(path, DEVICE.id) as events:
        append(events, 5, stored_at=time.time() - 3600)
        old_epoch = events.epoch
    backup = path.read_bytes()
    with EventStore(path, DEVICE.id) as events:
        append(events, 5)
        events.reserve_published(10)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(backup)
    with EventStore(path, DEVICE.id, init=True) as events:
        with pytest.raises(AckRefused, match="never published"):
            check_ack(Ack(old_epoch, 10), events, sent=set())
        assert check_ack(Ack(old_epoch, 10), events, sent={1, 2, 3, 4, 5}).ack.up_to_seq == 5
        events.mark_published([1, 2, 3, 4, 5], datetime.now(timezone.utc))
        checked = check_ack(Ack(old_epoch, 10, (7, 9)), events, sent=set())
        assert (checked.ack.up_to_seq, checked.ack.seqs, checked.first, checked.last) == (5, (), 1, 5)
        with pytest.raises(AckRefused, match="future seq"):
            check_ack(Ack(events.epoch, 6), events, sent=set())
        with pytest.raises(AckRefused, match="unknown epoch"):
            check_ack(Ack(OTHER_EPOCH, 1), events, sent=set())
        events.ack_up_to(5, datetime.now(timezone.utc))
        with pytest.raises(AckRefused, match="no unacknowledged events left"):
            check_ack(Ack(old_epoch, 5), events, sent=set())


def test_a_resend_from_below_an_epochs_first_seq_starts_at_that_seq(tmp_path: Path) -> None:
    """A central that lost its copy cannot know where an epoch began: its request from seq 1 for an epoch that
    started at seq 6 (after `--init`) means "from the first seq of that epoch", not a refusal."""
    from edge.mqtt.acks import Ack, check_ack

    path = tmp_path / "edge.db"
    with EventStore(path, DEVICE.id) as events:
        append(events, 5)
    backup = path.read_bytes()
    with EventStore(path, DEVICE.id) as events:
        append(events, 5)
        events.reserve_published(10)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(backup)  # seqs 6..10 lost: `--init` goes on in a new epoch from seq 6
    with EventStore(path, DEVICE.id, init=True) as events:
        append(events, 3)
        first = events.epoch_span(events.epoch)[0]  # type: ignore[index]
        assert first > 1
        checked = check_ack(Ack(events.epoch, 0, (), 1), events, sent=set())
        assert (checked.ack.resend_from, checked.first) == (first, first)
