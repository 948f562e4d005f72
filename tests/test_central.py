"""The reference central against a real mosquitto, with a fake box (a plain paho client) on the other side."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from edge.central import Central, CentralError, remove, sync_from_export, upsert_embeddings
from edge.central_cli import central as central_cli
from edge.central_store import ACK_MAX_SEQS, AckLedger
from edge.contract import Topics, camera_status_payload, encode, status_payload, validate
from edge.signing import SIGNED_FIELDS, parse_time
from tests.support import REPO, CentralKeys, Mosquitto, free_port, mosquitto_unavailable, wait_until

SITE, DEVICE = "school-1", "box-17"


# the ack rule, pure ---------------------------------------------------------------------------------------------------
def test_ack_ledger_acks_the_contiguous_prefix_and_lists_the_rest() -> None:
    ledger = AckLedger()
    ledger.add(1, None)
    ledger.add(2, 1)
    ledger.add(4, 3)
    assert ledger.ack(4) == {"schema": "edge.ack/1", "up_to_seq": 2, "seqs": [4]}
    ledger.add(3, 2)
    assert ledger.ack(3) == {"schema": "edge.ack/1", "up_to_seq": 4}
    ledger.add(7, 5)  # seq 6 was never used by the box: prev_seq jumps over it
    assert ledger.ack(7) == {"schema": "edge.ack/1", "up_to_seq": 4, "seqs": [7]}
    ledger.add(5, 4)
    assert ledger.ack(5)["up_to_seq"] == 7


def test_a_late_central_acks_by_list_until_the_box_reports_its_floor() -> None:
    ledger = AckLedger()
    ledger.add(15, 14)  # a live event arrives before the box's older unacknowledged backlog
    assert ledger.ack(15) == {"schema": "edge.ack/1", "up_to_seq": 0, "seqs": [15]}
    ledger.raise_floor(12)  # stats: outbox.acked_up_to = 12 (a previous central stored 1..12)
    ledger.add(13, 12)
    assert ledger.ack(13) == {"schema": "edge.ack/1", "up_to_seq": 13, "seqs": [15]}
    ledger.add(14, 13)
    assert ledger.ack(14) == {"schema": "edge.ack/1", "up_to_seq": 15}


def test_the_ack_list_is_capped_but_always_names_the_latest_seq() -> None:
    ledger = AckLedger()
    for seq in range(10, 10 + 2 * ACK_MAX_SEQS):
        ledger.add(seq, seq - 1)
    ledger.add(5, 4)
    ack = ledger.ack(5)
    validate("edge.ack/1", ack)
    assert ack["up_to_seq"] == 0 and len(ack["seqs"]) == ACK_MAX_SEQS and 5 in ack["seqs"]
    assert max(ack["seqs"]) == 9 + 2 * ACK_MAX_SEQS


# commands, pure -----------------------------------------------------------------------------------------------------
def test_command_builders_make_valid_commands() -> None:
    vector = [1.0] + [0.0] * 127
    up = upsert_embeddings({"person_id": "s1", "embeddings": [{"model_id": "m", "vector": vector}]}, base_version=3)
    assert up["op"] == "upsert" and up["base_version"] == 3 and len(up["request_id"]) == 32
    assert remove("s1")["person_id"] == "s1" and "base_version" not in remove("s1")
    doc = {"format": "edge-gallery", "format_version": 1, "gallery_version": 4, "exported_at": "x",
           "people": [{"person_id": "s1", "name": "S", "metadata": {}, "embeddings": [{"model_id": "m", "vector": vector}]}]}  # fmt: skip
    assert sync_from_export(doc)["people"][0]["person_id"] == "s1"
    with pytest.raises(CentralError, match="not an edge-gallery document"):
        sync_from_export({"people": []})
    with pytest.raises(CentralError, match="person_id"):
        remove("bad id!")


# against a real broker --------------------------------------------------------------------------------------------
needs_broker = pytest.mark.skipif(mosquitto_unavailable() is not None, reason=str(mosquitto_unavailable()))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if mosquitto_unavailable():
        pytest.skip(str(mosquitto_unavailable()))
    # as root mosquitto switches to the user "mosquitto", who cannot write pytest's 0700 folders (no persistence)
    mosquitto = Mosquitto(tmp_path / "broker", free_port())
    mosquitto.start()
    yield mosquitto
    mosquitto.kill()


def event(seq: int, prev_seq: Optional[int], device: str = DEVICE, **changes: Any) -> Dict[str, Any]:
    payload = {
        "schema": "edge.event/1", "event_id": f"{device}-{seq:010d}", "seq": seq, "prev_seq": prev_seq,
        "device_id": device, "site": SITE, "type": "entry", "person_id": f"s{seq}", "camera_id": "door",
        "at": "2026-03-02T08:00:00+09:00", "decided_at": "2026-03-02T08:00:02+09:00", "session": "2026-03-02",
        "track_id": f"door-{seq}", "score": 0.71, "margin": 0.2, "frames": 5, "quality": 0.8,
        "gallery_version": 3, "model_id": "sface-int8", "stored_at": "2026-03-01T23:00:02+00:00",
        "historical": False,
    }  # fmt: skip
    payload.update(changes)
    validate("edge.event/1", payload)
    return payload


class FakeBox:
    """A plain paho client playing the box: publishes events, statuses and stats; records acks; answers commands."""

    def __init__(self, port: int, answer: Optional[Callable[[Dict[str, Any]], Any]] = None) -> None:
        self.topics = Topics.of("edge/v1", SITE, DEVICE)
        self.acks: List[Dict[str, Any]] = []
        self.answer = answer
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"box-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(self.topics.ack, 1), (self.topics.gallery_command, 1)])
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        payload = json.loads(message.payload)
        if message.topic == self.topics.ack:
            validate("edge.ack/1", payload)
            with self.lock:
                self.acks.append(payload)
        elif self.answer is not None:
            result = self.answer(payload)
            if result is not None:
                self.client.publish(self.topics.gallery_result, encode(result), qos=1)

    def send(self, topic: str, payload: Any, retain: bool = False) -> None:
        raw = payload if isinstance(payload, bytes) else encode(payload)
        self.client.publish(topic, raw, qos=1, retain=retain).wait_for_publish(5)

    def ack_count(self) -> int:
        with self.lock:
            return len(self.acks)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def open_central(broker: Mosquitto, db: Path, **kwargs: Any) -> Central:
    central = Central("127.0.0.1", broker.port, db, client_id=kwargs.pop("client_id", "central-test"), **kwargs)
    central.start()
    assert central.wait_connected(5)
    return central


def stats(acked_up_to: int) -> Dict[str, Any]:
    payload = {"schema": "edge.stats/1", "device_id": DEVICE, "at": "2026-03-02T08:00:00+00:00", "interval_s": 60,
               "uptime_s": 100, "cameras": [],
               "outbox": {"depth": 0, "oldest_unacked_age_s": None, "last_seq": 20, "acked_up_to": acked_up_to}}  # fmt: skip
    validate("edge.stats/1", payload)
    return payload


@needs_broker
def test_events_are_stored_once_acked_in_order_and_bad_messages_counted(broker: Mosquitto, tmp_path: Path) -> None:
    box = FakeBox(broker.port)
    central = open_central(broker, tmp_path / "central.db")
    try:
        # 2 again: a redelivery (historical now, the facts unchanged); 4 before 3; 7 after 5 with 6 never used
        for seq, prev, again in [
            (1, None, False),
            (2, 1, False),
            (4, 3, False),
            (2, 1, True),
            (3, 2, False),
            (7, 5, False),
        ]:
            box.send(box.topics.events, event(seq, prev, historical=again))
        bad = [b"not json", encode({**event(5, 4), "score": "high"}), encode(event(5, 4, device="other-box")),
               encode({**event(5, 4), "event_id": f"{DEVICE}-0000000009"})]  # fmt: skip
        for raw in bad:
            box.send(box.topics.events, raw)
        box.send(box.topics.status, b"{}")
        assert wait_until(lambda: central.counts().get("invalid", 0) == 5, 20)
        assert wait_until(lambda: box.ack_count() == 6, 20)
        assert [(a["up_to_seq"], a.get("seqs", [])) for a in box.acks] == [
            (1, []), (2, []), (2, [4]), (2, [4]), (4, []), (4, [7])
        ]  # fmt: skip

        box.send(box.topics.events, event(5, 4))  # still working after the bad ones; 6 was never used
        assert wait_until(lambda: box.ack_count() == 7, 20)
        assert box.acks[-1] == {"schema": "edge.ack/1", "up_to_seq": 7}

        box.send(box.topics.events, event(5, 4, type="exit"))  # same event_id, other facts: kept out, not acked
        assert wait_until(lambda: central.counts().get("conflicts") == 1, 20)
        assert box.ack_count() == 7

        rows = central.events(DEVICE)
        assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 7]
        assert [r["deliveries"] for r in rows] == [1, 2, 1, 1, 2, 1]
        assert rows[4]["payload"]["type"] == "entry"
        assert rows[0]["payload"] == event(1, None) and rows[0]["site"] == SITE
        counts = central.counts()
        assert (counts["events"], counts["duplicates"], counts["acks"]) == (6, 1, 7)
        assert central.events("other-box") == []
    finally:
        central.close()
        box.close()

    # A restarted central keeps its persistent session and its ledger: events sent meanwhile arrive and are acked.
    box = FakeBox(broker.port)
    box.send(box.topics.events, event(8, 7))
    central = open_central(broker, tmp_path / "central.db")
    try:
        assert wait_until(lambda: box.ack_count() == 1, 20)
        assert box.acks == [{"schema": "edge.ack/1", "up_to_seq": 8}]
    finally:
        central.close()
        box.close()


@needs_broker
def test_a_late_central_starts_from_the_box_floor_in_its_stats(broker: Mosquitto, tmp_path: Path) -> None:
    box = FakeBox(broker.port)
    central = open_central(broker, tmp_path / "central.db", client_id="late-central")
    try:
        box.send(box.topics.events, event(15, 14))
        assert wait_until(lambda: box.ack_count() == 1, 20)
        assert box.acks[0] == {"schema": "edge.ack/1", "up_to_seq": 0, "seqs": [15]}
        box.send(box.topics.stats, stats(acked_up_to=13))
        assert wait_until(lambda: central.stats_of(SITE, DEVICE) is not None, 20)
        box.send(box.topics.events, event(14, 13, historical=True))
        assert wait_until(lambda: box.ack_count() == 2, 20)
        assert box.acks[1] == {"schema": "edge.ack/1", "up_to_seq": 15}
    finally:
        central.close()
        box.close()


@needs_broker
def test_retained_statuses_are_seen_by_a_central_that_starts_later(broker: Mosquitto, tmp_path: Path) -> None:
    box = FakeBox(broker.port)
    online = status_payload(DEVICE, SITE, "online", "boot-1", gallery_version=3, model_id="sface-int8")
    camera = camera_status_payload(DEVICE, "door", "reconnecting", "stream lost")
    box.send(box.topics.status, online, retain=True)
    box.send(box.topics.camera_status("door"), camera, retain=True)
    lines: List[str] = []
    central = open_central(broker, tmp_path / "central.db", on_notice=lambda n: lines.append(n.line))
    try:
        assert wait_until(lambda: central.camera_status_of(SITE, DEVICE, "door") is not None, 20)
        assert wait_until(lambda: central.status_of(SITE, DEVICE) is not None, 20)
        assert central.status_of(SITE, DEVICE) == online
        assert central.camera_status_of(SITE, DEVICE, "door") == camera
        assert central.status_of(SITE, "box-99") is None
        assert any(line.startswith(f"status    {SITE}/{DEVICE} online") for line in lines)
        box.send(box.topics.status, b"", retain=True)  # the retained status is cleared
        assert wait_until(lambda: central.status_of(SITE, DEVICE) is None, 20)
    finally:
        central.close()
        box.close()


@needs_broker
def test_push_waits_for_the_boxes_answer(broker: Mosquitto, tmp_path: Path, central_keys: CentralKeys) -> None:
    seen: List[Dict[str, Any]] = []

    def answer(command: Dict[str, Any]) -> Dict[str, Any]:
        validate("edge.gallery_command/1", command)
        seen.append(command)
        from edge.contract import gallery_result_payload

        return gallery_result_payload(command["request_id"], command["op"], "ok", "erased", 8, people=2)

    box = FakeBox(broker.port, answer)
    central = open_central(broker, tmp_path / "central.db", key_file=central_keys.key_file)
    try:
        command = remove("s1", base_version=7)
        result = central.push(SITE, DEVICE, command, timeout=5)
        assert result["request_id"] == command["request_id"] and result["status"] == "ok"
        [sent] = seen  # signed for this one box, valid for the push's timeout
        assert {k: v for k, v in sent.items() if k not in SIGNED_FIELDS} == command
        central_keys.verifier(f"{SITE}/{DEVICE}").check(sent)
        assert parse_time(sent["expires_at"], "") - parse_time(sent["issued_at"], "") == timedelta(seconds=5)
        assert central.result(command["request_id"]) == result
        with pytest.raises(CentralError, match="no answer from school-1/box-99"):
            central.push(SITE, "box-99", remove("s1"), timeout=0.3)
        with pytest.raises(CentralError, match="not a valid gallery command"):
            central.push(SITE, DEVICE, {"op": "remove"}, timeout=0.3)
    finally:
        central.close()
        box.close()


@needs_broker
def test_cli_push_photos_to_a_real_gallery_sync(
    broker: Mosquitto, tmp_path: Path, data: Path, central_keys: CentralKeys
) -> None:
    from edge.config import Config
    from edge.detect import FaceDetector
    from edge.embed import Embedder
    from edge.gallery import Gallery
    from edge.recognize import Recognizer
    from edge.sync import GallerySync

    commands: queue.Queue[Optional[Dict[str, Any]]] = queue.Queue()
    box = FakeBox(broker.port, answer=commands.put)

    def gallery_thread() -> None:  # as on the box: one thread owns the gallery connection and the recognizer
        config = Config()
        with FaceDetector(config.detector) as detector, Gallery(tmp_path / "box.db") as gallery:
            recognizer = Recognizer(detector, Embedder(num_threads=2), config.quality)
            sync = GallerySync(gallery, recognizer, central_keys.verifier(f"{SITE}/{DEVICE}"))
            for command in iter(commands.get, None):
                box.send(box.topics.gallery_result, sync.apply(command))

    worker = threading.Thread(target=gallery_thread)
    worker.start()
    try:
        ham = data / "hamilton"
        args = ["push", "--host", "127.0.0.1", "--port", str(broker.port), "--site", SITE, "--device", DEVICE,
                "--person-id", "obama", "--name", "Barack Obama", "--photo", str(ham / "obama.jpg"),
                "--photo", str(ham / "two_people.jpg"), "--timeout", "20", "--key-file", str(central_keys.key_file)]  # fmt: skip
        out = CliRunner().invoke(central_cli, args)
        assert out.exit_code == 0, out.output
        assert "obama photo 0: enrolled" in out.output and "obama photo 1: several_faces" in out.output
        assert "ok: person 'obama' stored with 1 embeddings (version 1) (gallery version 1, 1 people)" in out.output

        args = ["remove", "--host", "127.0.0.1", "--port", str(broker.port), "--site", SITE, "--device", DEVICE,
                "--person-id", "nobody", "--timeout", "5", "--key-file", str(central_keys.key_file)]  # fmt: skip
        out = CliRunner().invoke(central_cli, args)
        assert out.exit_code == 1 and "Error: rejected: no person with id 'nobody'" in out.output
    finally:
        commands.put(None)
        worker.join(20)
        box.close()
    with Gallery(tmp_path / "box.db") as gallery:
        assert [p.person_id for p in gallery.people()] == ["obama"]


@needs_broker
def test_cli_run_prints_events_until_sigterm_and_events_lists_them(broker: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    cmd = [sys.executable, "-c", "import sys; from edge.central_cli import central; central(sys.argv[1:])",
           "run", "--host", "127.0.0.1", "--port", str(broker.port), "--db", str(db), "--client-id", "cli-central"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    box = FakeBox(broker.port)
    try:
        box.send(box.topics.status, status_payload(DEVICE, SITE, "online", "boot-1"), retain=True)

        def delivered() -> bool:  # sent again until the central (still starting) stores and acks it
            box.send(box.topics.events, event(1, None))
            return box.ack_count() > 0

        assert wait_until(delivered, 15, 0.5)
    finally:
        box.close()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert f"event     {SITE}/{DEVICE} #1 entry s1 at 2026-03-02T08:00:00+09:00" in stdout
    assert f"status    {SITE}/{DEVICE} online" in stdout
    assert "central: stopped (" in stderr

    out = CliRunner().invoke(central_cli, ["events", "--db", str(db)])
    assert out.exit_code == 0, out.output
    assert f"{SITE}/{DEVICE} #1 entry s1 at 2026-03-02T08:00:00+09:00 (deliveries" in out.output
    out = CliRunner().invoke(central_cli, ["events", "--db", str(db), "--json"])
    assert json.loads(out.output.splitlines()[0])["event_id"] == f"{DEVICE}-0000000001"


def test_every_central_command_has_help_and_errors_are_one_line(tmp_path: Path, central_keys: CentralKeys) -> None:
    for name, command in central_cli.commands.items():  # type: ignore[attr-defined]
        assert command.help, f"edge central {name} has no help text"
        for param in command.params:
            if isinstance(param, __import__("click").Option):
                assert param.help, f"edge central {name} {param.opts[0]} has no help text"
    port = free_port()
    key = ["--key-file", str(central_keys.key_file)]
    out = CliRunner().invoke(central_cli, ["remove", "--host", "127.0.0.1", "--port", str(port), "--site", SITE,
                                           "--device", DEVICE, "--person-id", "s1", *key])  # fmt: skip
    assert out.exit_code == 1 and out.output.strip().startswith("Error: cannot reach the broker at 127.0.0.1:")
    out = CliRunner().invoke(central_cli, ["push", "--host", "h", "--site", SITE, "--device", DEVICE, "--person-id",
                                           "s1", "--photo", str(tmp_path / "missing.jpg"), *key])  # fmt: skip
    assert out.exit_code == 1 and "missing.jpg: cannot be read" in out.output
