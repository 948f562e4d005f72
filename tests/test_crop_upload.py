"""Crop upload (crops.upload): the box sends the crop of each unknown_face event to the central over a real mosquitto,
from a bounded side queue that never holds an event back; the central keeps crops within its size rules and
deletes them after its retention limit."""

from __future__ import annotations

import base64
import json
import stat
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from support import Mosquitto, RtspServer, edge_command, enroll_lin_manuel, free_port, mosquitto_unavailable, wait_until

from edge.attendance import AttendanceEvent, EventType
from edge.central.crops import CentralCrops, CropRules
from edge.central.server import Central
from edge.central.store import CentralStore
from edge.config import DeviceConfig
from edge.crops import CropsConfig, CropStore, CropUpload
from edge.mqtt.contract import MqttConfig, Topics, crop_payload, encode, validate
from edge.mqtt.link import MAX_CROPS, Link, LinkInfo
from edge.store import EventContext, EventStore, StoredEvent

SITE, DEVICE = "school-1", "box-17"
EPOCH = "0123456789abcdef"
TOPICS = Topics.of("edge/v1", SITE, DEVICE)


def event_id(seq: int, device: str = DEVICE) -> str:
    return f"{device}-{EPOCH}-{seq:010d}"


def face_jpeg(side: int = 112, noise: bool = False) -> bytes:
    """A JPEG of a smooth gradient (a few KiB), or of noise (far larger: JPEG cannot compress it)."""
    rng = np.random.default_rng(3)
    if noise:
        image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    else:
        ramp = np.linspace(0, 255, side, dtype=np.uint8)
        image = np.dstack([np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side)), np.full((side, side), 90, np.uint8)])
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


class Listener:
    """A plain paho client recording what arrives on some topics."""

    def __init__(self, port: int, *topics: str) -> None:
        self.received: List[Dict[str, Any]] = []
        self.topics: List[str] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"listener-{free_port()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
        self.client.loop_start()
        time.sleep(0.3)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.topics.append(message.topic)
        self.received.append(json.loads(message.payload))

    def of(self, topic: str) -> List[Dict[str, Any]]:
        return [p for t, p in zip(list(self.topics), list(self.received)) if t == topic]

    def publish(self, topic: str, payload: Any) -> None:
        raw = payload if isinstance(payload, bytes) else encode(payload)
        self.client.publish(topic, raw, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------- the central's rules


def test_the_central_keeps_a_valid_crop_and_refuses_oversized_foreign_and_non_jpeg_ones(
    broker: Mosquitto, tmp_path: Path
) -> None:
    rules = CropRules(folder=tmp_path / "crops", max_bytes=8 * 1024)
    central = Central("127.0.0.1", broker.port, tmp_path / "central.db", client_id="central-test", crop_rules=rules)
    central.start()
    box = Listener(broker.port)
    try:
        assert central.wait_connected(5)
        good, huge = face_jpeg(), face_jpeg(noise=True)
        assert len(good) < 8 * 1024 < len(huge), (len(good), len(huge))
        _, png = cv2.imencode(".png", np.zeros((112, 112, 3), np.uint8))
        at = "2026-03-02T08:00:00+09:00"
        sends = [
            crop_payload(DEVICE, SITE, event_id(1), "unknown_face", at, good),
            crop_payload(DEVICE, SITE, event_id(2), "unknown_face", at, huge),  # over max_bytes
            crop_payload(DEVICE, SITE, event_id(3), "unknown_face", at, png.tobytes()),  # not a JPEG
            crop_payload(DEVICE, SITE, event_id(4, "box-99"), "unknown_face", at, good),  # another box's event
        ]
        for payload in sends:
            validate("edge.crop/1", payload)
            box.publish(TOPICS.crop, payload)
        box.publish(TOPICS.crop, {**sends[0], "jpeg": "not base64!"})  # breaks the schema
        assert wait_until(lambda: sum(central.counts().get(k, 0) for k in ("crops", "crops_refused", "invalid")) == 5, 5)
        counts = central.counts()
        assert (counts.get("crops"), counts.get("crops_refused"), counts.get("invalid")) == (1, 3, 1), counts
        assert central.crops is not None
        assert central.crops.read(event_id(1)) == good
        assert [c.event_id for c in central.crops.between(*day_of(at))] == [event_id(1)]
        assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == [f"{event_id(1)}.jpg"]
        assert stat.S_IMODE((tmp_path / "crops").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "crops" / f"{event_id(1)}.jpg").stat().st_mode) == 0o600
    finally:
        box.close()
        central.close()


def day_of(at: str) -> Tuple[datetime, datetime]:
    start = datetime.fromisoformat(at).replace(hour=0, minute=0, second=0)
    return start, start + timedelta(days=1)


def append(store: EventStore, n: int) -> List[StoredEvent]:
    now = datetime.now(timezone.utc)
    events = [
        AttendanceEvent(EventType.UNKNOWN_FACE, None, "door", now, now, None, f"t{i}", 0.0, 0.0, 5, 0.5)
        for i in range(n)
    ]
    return store.append(events, EventContext(gallery_version=0, model_id="m", mono_time=1.0, wall_time=time.time()))


def test_retention_and_the_total_bound_delete_the_oldest_crops(tmp_path: Path) -> None:
    store = CentralStore(tmp_path / "central.db")
    jpeg = face_jpeg()
    rules = CropRules(folder=tmp_path / "crops", max_bytes=2048, max_total_bytes=3 * len(jpeg), retention_days=1)
    crops = CentralCrops(store, rules)
    try:
        now = time.time()
        at = "2026-03-02T08:00:00+09:00"

        def add(seq: int, received: float) -> None:
            crops.add(SITE, DEVICE, crop_payload(DEVICE, SITE, event_id(seq), "unknown_face", at, jpeg), now=received)

        add(1, now - 2 * 86400)
        assert crops.read(event_id(1)) == jpeg
        add(2, now - 3600)  # a day and more later: the purge (at most hourly) deletes the crop of two days ago
        assert crops.get(event_id(1)) is None and not crops.path_of(event_id(1)).exists()
        add(3, now - 60)
        assert crops.purge(now + 86400 - 1800, force=True) == 1  # crop 2 is then a day old, crop 3 not yet
        assert crops.get(event_id(2)) is None and crops.read(event_id(3)) == jpeg
        for seq in (4, 5, 6):  # the total bound is three crops: the oldest go first
            add(seq, now)
        kept = [c.event_id for c in crops.between(*day_of(at))]
        assert kept == [event_id(4), event_id(5), event_id(6)]
        assert crops.total_bytes() == 3 * len(jpeg)
        assert sorted(p.stem for p in (tmp_path / "crops").glob("*.jpg")) == kept
        again = CentralCrops(store, CropRules(folder=tmp_path / "crops"))  # migrations applied once, rows kept
        assert again.get(event_id(6)) is not None
    finally:
        store.close()


def test_upload_needs_crops_kept_on_the_box_and_a_bounded_size() -> None:
    with pytest.raises(ValueError, match="upload needs enabled"):
        CropsConfig(upload=True)
    with pytest.raises(ValueError, match="max_upload_bytes"):
        CropsConfig(enabled=True, upload=True, max_upload_bytes=10 * 1024 * 1024)


def test_a_crop_over_max_upload_bytes_stays_on_the_box(tmp_path: Path) -> None:
    sent: List[CropUpload] = []
    store = CropStore(CropsConfig(enabled=True, upload=True, folder=tmp_path / "crops", max_upload_bytes=4096))
    store.send_to(sent.append)
    rng = np.random.default_rng(1)
    assert store.save(event_id(1), np.full((112, 112, 3), 128, np.uint8), "unknown_face", "2026-03-02T08:00:00+09:00")
    assert store.save(event_id(2), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))  # noise: about 20 KiB
    assert [s.event_id for s in sent] == [event_id(1)] and store.too_large == 1
    assert (tmp_path / "crops" / f"{event_id(2)}.jpg").exists()
    assert sent[0].jpeg == (tmp_path / "crops" / f"{event_id(1)}.jpg").read_bytes()


# ---------------------------------------------------------------- the box's side queue


def test_crops_queued_while_the_broker_is_away_are_bounded_and_never_hold_events_back(tmp_path: Path) -> None:
    reason = mosquitto_unavailable()
    if reason:
        pytest.skip(reason)
    port = free_port()
    config = MqttConfig(host="127.0.0.1", port=port, keepalive_s=5, reconnect_min_s=0.1, reconnect_max_s=0.5)
    device = DeviceConfig(id=DEVICE, site=SITE)
    info = LinkInfo(software_version="1", model_id="m", config_hash="h", gallery_version=0)
    with EventStore(tmp_path / "edge.db", DEVICE) as store:
        link = Link(config, device, store.path, info)
        link.start()
        try:
            jpeg = face_jpeg()
            extra = 8
            for seq in range(1, MAX_CROPS + extra + 1):  # no broker yet: the side queue keeps the newest MAX_CROPS
                link.offer_crop(CropUpload(event_id(seq), "unknown_face", "2026-03-02T08:00:00+09:00", jpeg))
            stored = append(store, 20)
            link.notify_new_events()
            assert link.crops_dropped == extra
            broker = Mosquitto(tmp_path / "broker", port)
            listener: Any = None
            broker.start()
            try:
                listener = Listener(port, TOPICS.crop, TOPICS.events)
                published = lambda: all(e.published_at for e in store.unacked_after(0, 100))  # noqa: E731
                assert wait_until(published, 15), "the events went out"
                assert wait_until(lambda: len(listener.of(TOPICS.crop)) == MAX_CROPS, 15), len(listener.of(TOPICS.crop))
                crops = listener.of(TOPICS.crop)
                for payload in crops:
                    validate("edge.crop/1", payload)
                assert [p["event_id"] for p in crops] == [event_id(s) for s in range(extra + 1, MAX_CROPS + extra + 1)]
                assert base64.b64decode(crops[0]["jpeg"]) == jpeg
                assert link.crops_sent == MAX_CROPS
                events = listener.of(TOPICS.events)
                assert len({e["seq"] for e in events}) == len(stored) == 20
            finally:
                if listener is not None:
                    listener.close()
                broker.kill()
        finally:
            link.close()


# ---------------------------------------------------------------- the whole way


def test_a_crop_of_an_unknown_face_reaches_the_central(
    tmp_path: Path, data: Path, rtsp: RtspServer, broker: Mosquitto
) -> None:
    """The real daemon on the RTSP Hamilton stream, crops.upload on: each unknown_face event the central stores
    gets its crop there, the same JPEG the box kept; Lin-Manuel's entry gets none."""
    import subprocess

    db = tmp_path / "box.db"
    enroll_lin_manuel(db, data)
    config = tmp_path / "edge.yml"
    config.write_text(
        f"device: {{id: {DEVICE}, site: {SITE}, timezone: Asia/Seoul}}\nstorage: {{database: {db}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, reconnect_min_s: 0.2, reconnect_max_s: 1.0}}\n"
        f"crops: {{enabled: true, upload: true, folder: {tmp_path / 'box-crops'}}}\n"
        f"cameras:\n  - {{id: door, url: '{rtsp.url}', role: entrance, max_fps: 15, open_timeout_s: 5}}\n"
    )
    central = Central("127.0.0.1", broker.port, tmp_path / "central.db", client_id="central-test")
    central.start()
    log = tmp_path / "edge.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*edge_command(), "--config", str(config), "run"], stdout=out, stderr=subprocess.STDOUT)
    try:
        assert central.wait_connected(5) and central.crops is not None
        crops = central.crops

        def unknown_with_crops() -> List[str]:
            unknown = [e["event_id"] for e in central.events() if e["type"] == "unknown_face"]
            return [e for e in unknown if crops.get(e) is not None]

        arrived = wait_until(lambda: bool(unknown_with_crops()), 120, 0.5)
        assert arrived, (  # what each side saw, for a failure that once happened on a loaded machine only
            f"central counts {central.counts()}; unknown events at the central "
            f"{[e['event_id'] for e in central.events() if e['type'] == 'unknown_face']}; box crops "
            f"{sorted(p.name for p in (tmp_path / 'box-crops').glob('*.jpg'))}\n{log.read_text()[-3000:]}"
        )
        first = unknown_with_crops()[0]
        jpeg = crops.read(first)
        assert jpeg is not None and jpeg == (tmp_path / "box-crops" / f"{first}.jpg").read_bytes()
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (112, 112, 3)
        crop = crops.get(first)
        assert crop is not None and crop.event_type == "unknown_face" and crop.device_id == DEVICE
        assert wait_until(lambda: any(e["type"] == "entry" for e in central.events()), 60, 0.5)
        named = {e["event_id"] for e in central.events() if e["person_id"] is not None}
        assert all(crops.get(e) is None for e in named), "a recognised person's event gets no crop"
        assert central.counts().get("invalid", 0) == 0 and central.counts().get("crops_refused", 0) == 0
        print(f"crops at the central: {central.counts().get('crops')}; the first {len(jpeg)} bytes")
    finally:
        proc.terminate()
        proc.wait(30)
        central.close()
