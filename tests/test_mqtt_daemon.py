"""The whole daemon against a real mosquitto broker and the reference central server (edge.central):
delivery of the real RTSP stream's events, status and last will, outages and SIGKILLs, bad messages, gallery sync.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, List, Optional

import paho.mqtt.client as mqtt
import pytest
from support import (
    CentralKeys,
    Mosquitto,
    RtspServer,
    edge_command,
    enroll_lin_manuel,
    free_port,
    rtsp_unavailable,
    run_edge,
    stored_events,
    wait_until,
)

from edge.attendance import AttendanceEvent, EventType
from edge.central import server as central_mod
from edge.central.server import Central
from edge.mqtt.contract import Topics, validate
from edge.store import EventContext, EventStore

SITE, DEVICE = "school", "door-box"
TOPICS = Topics.of("edge/v1", SITE, DEVICE)


@pytest.fixture
def central(tmp_path: Path, broker: Mosquitto, central_keys: CentralKeys) -> Iterator[Central]:
    hub = Central("127.0.0.1", broker.port, tmp_path / "central.db", key_file=central_keys.key_file)
    hub.start()
    try:
        yield hub
    finally:
        hub.close()


def write_config(folder: Path, db: Path, port: int, cameras: str = "  []\n", extra_mqtt: str = "") -> Path:
    path = folder / "edge.yml"
    path.write_text(
        f"device: {{id: {DEVICE}, site: {SITE}, timezone: Asia/Seoul}}\n"
        f"storage: {{database: {db}}}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  stats_interval_s: 1.0\n  redeliver_after_s: 3.0\n"
        f"  reconnect_min_s: 0.2\n  reconnect_max_s: 1.0\n  keepalive_s: 5\n{extra_mqtt}"
        f"cameras:\n{cameras}"
    )
    return path


class Daemon:
    """`edge run` as a child process, its output in a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: Optional[subprocess.Popen[str]] = None

    def start(self) -> Daemon:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                [*edge_command(), "--config", str(self.config), "run"], stdout=out, stderr=subprocess.STDOUT, text=True
            )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def text(self) -> str:
        return self.log.read_text()


def test_rtsp_entry_reaches_the_central_server_and_the_last_will_says_offline(
    tmp_path: Path, data: Path, broker: Mosquitto, central: Central
) -> None:
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)
    db = tmp_path / "box.db"
    enroll_lin_manuel(db, data)
    rtsp = RtspServer(data / "hamilton" / "short_hamilton_clip.mp4", free_port(), loop=True)
    rtsp.start()
    cameras = f"  - {{id: door, url: '{rtsp.url}', role: entrance, max_fps: 15, open_timeout_s: 5}}\n"
    daemon = Daemon(write_config(tmp_path, db, broker.port, cameras), tmp_path / "edge.log").start()
    try:

        def entry_acked() -> bool:
            return any(e["type"] == "entry" and e["acked_at"] for e in stored_events(db))

        assert wait_until(entry_acked, 90, 0.5), daemon.text()[-3000:]
        entries = [e for e in central.events() if e["type"] == "entry"]
        assert [e["person_id"] for e in entries] == ["lin-manuel"]
        validate("edge.event/1", entries[0]["payload"])
        assert entries[0]["payload"]["historical"] is False and entries[0]["payload"]["site"] == SITE
        status = central.status_of(SITE, DEVICE)
        assert status is not None and status["state"] == "online"
        validate("edge.status/1", status)
        assert status["model_id"] and status["gallery_version"] == 1 and len(status["config_hash"]) == 64
        assert wait_until(lambda: (central.camera_status_of(SITE, DEVICE, "door") or {}).get("state") == "online", 10)
        assert wait_until(lambda: central.stats_of(SITE, DEVICE) is not None, 10)
        stats = central.stats_of(SITE, DEVICE)
        validate("edge.stats/1", stats)
        assert stats is not None and stats["cameras"][0]["camera_id"] == "door"
        assert central.counts().get("invalid", 0) == 0, "everything the box published must match its schema"
        daemon.kill()  # SIGKILL: no goodbye, the broker sends the last will
        assert wait_until(lambda: (central.status_of(SITE, DEVICE) or {}).get("state") == "offline", 20)
        assert central.status_of(SITE, DEVICE)["reason"] == "lost"  # type: ignore[index]
    finally:
        daemon.kill()
        rtsp.kill()
    named = [e for e in stored_events(db) if e["person_id"] is not None]
    assert [(e["type"], e["person_id"]) for e in named] == [("entry", "lin-manuel")]


def inject(db: Path, count: int, stop: threading.Event, pause: float) -> None:
    """Stand-in for the pipeline: decided events appended to the box's store in steps of three."""
    with EventStore(db, DEVICE) as store:
        n = 0
        while n < count and not stop.is_set():
            at = datetime.now(timezone(timedelta(hours=9)))
            events = [
                AttendanceEvent(EventType.UNKNOWN_FACE, None, "door", at, at, None, f"t{n}-{k}", 0.0, 0.0, 5, 0.5)
                for k in range(3)
            ]
            store.append(
                events, EventContext(gallery_version=0, model_id="m", mono_time=float(n), wall_time=time.time())
            )
            n += 1
            time.sleep(pause)


def test_outages_and_sigkills_lose_nothing(tmp_path: Path, broker: Mosquitto, central: Central) -> None:
    db = tmp_path / "box.db"
    EventStore(db, DEVICE).close()
    # events older than 1 s when sent count as backlog (historical)
    config = write_config(tmp_path, db, broker.port, extra_mqtt="  live_window_s: 1.0\n")
    daemon = Daemon(config, tmp_path / "edge.log").start()
    stop = threading.Event()
    writer = threading.Thread(target=inject, args=(db, 400, stop, 0.02), daemon=True)
    writer.start()
    rng = random.Random(7)
    try:
        time.sleep(2.0)
        broker.stop()  # the broker goes away for a while; events keep being decided
        time.sleep(3.0)
        broker.start()
        for _ in range(4):  # the daemon dies at random moments and is restarted
            time.sleep(rng.uniform(0.5, 2.0))
            daemon.kill()
            time.sleep(rng.uniform(0.1, 0.8))
            daemon.start()
        writer.join(60)
        assert not writer.is_alive()

        def all_delivered() -> bool:
            box = stored_events(db)
            return bool(box) and all(e["acked_at"] for e in box)

        assert wait_until(all_delivered, 90, 0.5), daemon.text()[-3000:]
        assert daemon.stop() == 0
    finally:
        stop.set()
        daemon.kill()
    box = {e["event_id"] for e in stored_events(db)}
    copy = central.events()
    assert len(box) == 1200
    assert {e["event_id"] for e in copy} == box, "the central copy must hold exactly the box's events"
    assert len(copy) == len(box)  # stored once each; redeliveries only raise the delivery count
    assert any(e["payload"]["historical"] for e in copy), "events sent after the outage are marked historical"
    for e in copy[:: max(1, len(copy) // 50)]:
        validate("edge.event/1", e["payload"])
    assert "Traceback" not in daemon.text()


def test_bad_messages_are_rejected_and_the_daemon_keeps_running(
    tmp_path: Path, data: Path, broker: Mosquitto, central: Central, central_keys: CentralKeys
) -> None:
    db = tmp_path / "box.db"
    enroll_lin_manuel(db, data)
    key = f"  central_key_file: {central_keys.public_file}\n"
    daemon = Daemon(write_config(tmp_path, db, broker.port, extra_mqtt=key), tmp_path / "edge.log").start()
    results: List[dict] = []  # type: ignore[type-arg]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tester")
    client.on_message = lambda _c, _u, msg: results.append(json.loads(msg.payload))
    client.connect("127.0.0.1", broker.port)
    client.subscribe(TOPICS.gallery_result, qos=1)
    client.loop_start()
    try:
        assert wait_until(lambda: (central.status_of(SITE, DEVICE) or {}).get("state") == "online", 30), daemon.text()
        version = central.status_of(SITE, DEVICE)["gallery_version"]  # type: ignore[index]
        bad = {
            "not json": b"{this is not json",
            "wrong schema": json.dumps(
                {"schema": "edge.gallery_command/1", "request_id": "r1", "op": "explode"}
            ).encode(),
            "wrong types": json.dumps(
                {"schema": "edge.gallery_command/1", "request_id": "r2", "op": "remove", "person_id": 42}
            ).encode(),
            "10 MB": b'{"schema": "edge.gallery_command/1", "request_id": "r3", "pad": "' + b"x" * 10_000_000 + b'"}',
        }
        for payload in bad.values():
            client.publish(TOPICS.gallery_command, payload, qos=1).wait_for_publish(10)
        client.publish(TOPICS.ack, b'{"schema": "edge.ack/1", "epoch": "0123456789abcdef", "up_to_seq": "all"}', qos=1).wait_for_publish(10)
        wrong_model = central_mod.upsert_embeddings(
            {"person_id": "eve", "embeddings": [{"model_id": "other-model", "vector": [0.125] * 64}]}
        )
        assert central.push(SITE, DEVICE, wrong_model)["status"] == "rejected"
        assert "other-model" in central.result(wrong_model["request_id"])["reason"]  # type: ignore[index]
        unknown = central_mod.remove("nobody")
        assert central.push(SITE, DEVICE, unknown)["status"] == "rejected"
        assert "nobody" in central.result(unknown["request_id"])["reason"]  # type: ignore[index]
        stale = central_mod.remove("lin-manuel", base_version=version + 5)
        assert central.push(SITE, DEVICE, stale)["status"] == "version_mismatch"
        assert wait_until(lambda: len([r for r in results if r["status"] == "rejected"]) >= 6, 20), results
        for result in results:
            validate("edge.gallery_result/1", result)
        reasons = " ".join(r["reason"] for r in results)
        assert "byte limit" in reasons and "JSON" in reasons
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert "rejected a message on ack: edge.ack/1: up_to_seq" in daemon.text()  # no reply topic: logged
        # still working: a valid change goes through and the gallery is untouched by the bad ones
        assert central.status_of(SITE, DEVICE)["state"] == "online"  # type: ignore[index]
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM embeddings WHERE person_id = 'lin-manuel'").fetchone()[0] == 1
        assert daemon.stop() == 0
    finally:
        client.loop_stop()
        daemon.kill()
    assert "Traceback" not in daemon.text()


def test_gallery_pushed_by_the_central_is_used_then_erased(
    tmp_path: Path, data: Path, broker: Mosquitto, central: Central, central_keys: CentralKeys
) -> None:
    db = tmp_path / "box.db"
    EventStore(db, DEVICE).close()
    config = write_config(tmp_path, db, broker.port, extra_mqtt=f"  central_key_file: {central_keys.public_file}\n")
    daemon = Daemon(config, tmp_path / "edge.log").start()
    clip = data / "hamilton" / "short_hamilton_clip.mp4"

    def replay(start: str) -> List[dict]:  # type: ignore[type-arg]
        done = run_edge("--config", str(config), "replay", str(clip), "--start", start)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    try:
        assert wait_until(lambda: (central.status_of(SITE, DEVICE) or {}).get("state") == "online", 30), daemon.text()
        command = central_mod.upsert_photos(
            "lin-manuel", "Lin-Manuel Miranda", [data / "hamilton" / "lin-manuel-miranda.png"]
        )
        result = central.push(SITE, DEVICE, command, timeout=60)
        assert result["status"] == "ok", result
        assert wait_until(lambda: central.status_of(SITE, DEVICE)["gallery_version"] == result["gallery_version"], 10)  # type: ignore[index]
        assert [e["person_id"] for e in replay("2026-11-23T09:00:00+09:00") if e["person_id"]] == ["lin-manuel"]
        with closing(sqlite3.connect(db)) as conn:
            vectors = [row[0] for row in conn.execute("SELECT vector FROM embeddings WHERE person_id = 'lin-manuel'")]
        assert vectors
        removal = central.push(SITE, DEVICE, central_mod.remove("lin-manuel", base_version=result["gallery_version"]))
        assert removal["status"] == "ok", removal
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM embeddings WHERE person_id = 'lin-manuel'").fetchone()[0] == 0
            assert conn.execute("SELECT COUNT(*) FROM people WHERE person_id = 'lin-manuel'").fetchone()[0] == 0
        # erased from the files too: not in free pages of the database, not in its write-ahead log
        raw = b"".join(f.read_bytes() for f in (db, db.with_name(db.name + "-wal")) if f.exists())
        assert not any(vector in raw for vector in vectors) and b"Lin-Manuel Miranda" not in raw
        assert [e for e in replay("2026-11-24T09:00:00+09:00") if e["person_id"]] == []
        assert daemon.stop() == 0
    finally:
        daemon.kill()
