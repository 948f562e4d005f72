"""The reference central against a real mosquitto, with a fake box (a plain paho client) on the other side."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from click.testing import CliRunner

from edge.central.cli import central as central_cli
from edge.central.server import CentralError, remove, sync_from_export, upsert_embeddings
from edge.mqtt.contract import camera_status_payload, encode, status_payload, validate
from edge.mqtt.signing import SIGNED_FIELDS, parse_time
from tests.central_box import DEVICE, EPOCH, OTHER_EPOCH, SITE, FakeBox, ack, event, open_central, stats
from tests.support import REPO, CentralKeys, Mosquitto, free_port, mosquitto_unavailable, wait_until


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


@needs_broker
def test_events_are_stored_once_acked_in_order_and_bad_messages_counted(broker: Mosquitto, tmp_path: Path) -> None:
    box = FakeBox(broker.port)
    central = open_central(broker, tmp_path / "central.db")
    try:
        # 2 again: a redelivery (historical now, the facts unchanged); 4 before 3; 7 after 5 with 6 never used
        for seq, prev, again in [(1, None, False), (2, 1, False), (4, 3, False), (2, 1, True), (7, 5, False)]:
            box.send(box.topics.events, event(seq, prev, historical=again))
        assert wait_until(lambda: box.last_ack() == ack(2, [4, 7]), 20), box.acks
        box.send(box.topics.events, event(3, 2))
        assert wait_until(lambda: box.last_ack() == ack(4, [7]), 20), box.acks
        bad = [b"not json", encode({**event(5, 4), "score": "high"}), encode(event(5, 4, device="other-box")),
               encode({**event(5, 4), "event_id": f"{DEVICE}-{EPOCH}-0000000009"}),
               encode({**event(5, 4), "event_id": f"{DEVICE}-0000000005"}),  # the id of a box without epochs
               encode({**event(5, 4), "epoch": OTHER_EPOCH})]  # fmt: skip
        for raw in bad:
            box.send(box.topics.events, raw)
        box.send(box.topics.status, b"{}")
        assert wait_until(lambda: central.counts().get("invalid", 0) == 7, 20)

        box.send(box.topics.events, event(5, 4))  # still working after the bad ones; 6 was never used
        assert wait_until(lambda: box.last_ack() == ack(7), 20), box.acks

        rows = central.events(DEVICE)
        assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 7]
        assert [r["deliveries"] for r in rows] == [1, 2, 1, 1, 1, 1]
        assert rows[0]["payload"] == event(1, None) and rows[0]["site"] == SITE and rows[0]["epoch"] == EPOCH
        counts = central.counts()
        assert (counts["events"], counts["duplicates"], counts.get("errors", 0)) == (6, 1, 0)
        assert central.events("other-box") == [] and central.flags() == []
    finally:
        central.close()
        box.close()

    # A restarted central keeps its persistent session and its ledger: events sent meanwhile arrive and are acked.
    box = FakeBox(broker.port)
    box.send(box.topics.events, event(8, 7))
    central = open_central(broker, tmp_path / "central.db")
    try:
        assert wait_until(lambda: box.ack_count() == 1, 20)
        assert box.acks == [ack(8)]
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
        assert box.acks[0] == ack(0, [15])
        box.send(box.topics.stats, stats(acked_up_to=13, last_seq=15))
        assert wait_until(lambda: central.stats_of(SITE, DEVICE) is not None, 20)
        box.send(box.topics.events, event(14, 13, historical=True))
        assert wait_until(lambda: (box.last_ack() or {}).get("up_to_seq") == 15, 20), box.acks
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
        from edge.mqtt.contract import gallery_result_payload

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
    from edge.gallery.store import Gallery
    from edge.gallery.sync import GallerySync
    from edge.recognize import Recognizer

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
    cmd = [sys.executable, "-c", "import sys; from edge.central.cli import central; central(sys.argv[1:])",
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
    assert json.loads(out.output.splitlines()[0])["event_id"] == f"{DEVICE}-{EPOCH}-0000000001"


@needs_broker
def test_nested_or_oversized_json_is_counted_invalid_and_never_raises(broker: Mosquitto, tmp_path: Path) -> None:
    box = FakeBox(broker.port)
    central = open_central(broker, tmp_path / "central.db", max_message_bytes=64 * 1024)
    try:
        deep = [b"[" * 5000 + b"]" * 5000, b'{"a":' * 5000 + b"1" + b"}" * 5000, b'{"schema": ' + b"[" * 3000]
        for topic in (box.topics.events, box.topics.stats, box.topics.status, box.topics.gallery_result):
            for raw in deep:
                box.send(topic, raw)
        box.send(box.topics.events, encode({**event(1, None), "camera_id": "x" * 70_000}))  # over 64 KiB
        assert wait_until(lambda: central.counts().get("invalid", 0) == 13, 20), central.counts()
        box.send(box.topics.events, event(1, None))
        assert wait_until(lambda: box.last_ack() == ack(1), 20)
        assert central.counts().get("errors", 0) == 0
    finally:
        central.close()
        box.close()


@needs_broker
def test_the_broker_password_comes_from_a_file_or_the_environment_and_never_silently_from_argv(
    tmp_path: Path,
) -> None:
    if mosquitto_unavailable():
        pytest.skip(str(mosquitto_unavailable()))
    folder = tmp_path / "broker"
    mosquitto = Mosquitto(folder, free_port(), extra=f"password_file {folder / 'passwd'}\n")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(folder / "passwd"), "central", "s3cret"], check=True)
    (tmp_path / "password").write_text("s3cret\n")
    (tmp_path / "wrong").write_text("guess\n")
    mosquitto.start()
    box = FakeBox(mosquitto.port)
    base = ["resend", "--host", "127.0.0.1", "--port", str(mosquitto.port), "--username", "central", "--site", SITE,
            "--device", DEVICE, "--epoch", EPOCH, "--from", "3"]  # fmt: skip
    try:
        out = CliRunner().invoke(central_cli, [*base, "--password-file", str(tmp_path / "password")])
        assert out.exit_code == 0 and "warning" not in out.output, out.output
        out = CliRunner().invoke(central_cli, base, env={"EDGE_CENTRAL_PASSWORD": "s3cret"})
        assert out.exit_code == 0 and "warning" not in out.output, out.output
        out = CliRunner().invoke(central_cli, [*base, "--password", "s3cret"])
        assert out.exit_code == 0, out.output
        assert "warning: --password on the command line is visible to every user (ps)" in out.output
        assert wait_until(lambda: box.ack_count() == 3, 20) and box.acks[0] == ack(0, resend_from=3)
        out = CliRunner().invoke(central_cli, [*base, "--password-file", str(tmp_path / "wrong")])
        assert out.exit_code == 1 and "did not accept the connection" in out.output, out.output
        out = CliRunner().invoke(central_cli, [*base, "--password-file", str(tmp_path / "password"), "--password", "x"])
        assert out.exit_code == 2 and "not both" in out.output
    finally:
        box.close()
        mosquitto.kill()
    assert "--password-file" in CliRunner().invoke(central_cli, ["run", "--help"]).output


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
