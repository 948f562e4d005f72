"""A fake box for the reference central's tests: a plain paho client that publishes hand-built events and stats
(edge.event/1, edge.stats/1) and records the acks the central sends it."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

import paho.mqtt.client as mqtt

from edge.central.server import Central
from edge.mqtt.contract import Topics, encode, validate
from tests.support import Mosquitto

SITE, DEVICE = "school-1", "box-17"
EPOCH, OTHER_EPOCH = "0123456789abcdef", "fedcba9876543210"


def event(
    seq: int, prev_seq: Optional[int], device: str = DEVICE, epoch: str = EPOCH, **changes: Any
) -> Dict[str, Any]:
    payload = {
        "schema": "edge.event/1", "event_id": f"{device}-{epoch}-{seq:010d}", "epoch": epoch, "seq": seq,
        "prev_seq": prev_seq, "device_id": device, "site": SITE, "type": "entry", "person_id": f"s{seq}",
        "camera_id": "door", "at": "2026-03-02T08:00:00+09:00", "decided_at": "2026-03-02T08:00:02+09:00",
        "session": "2026-03-02", "track_id": f"door-{seq}", "score": 0.71, "margin": 0.2, "frames": 5,
        "quality": 0.8, "gallery_version": 3, "model_id": "sface-int8", "stored_at": "2026-03-01T23:00:02+00:00",
        "historical": False,
    }  # fmt: skip
    payload.update(changes)
    validate("edge.event/1", payload)
    return payload


def stats(acked_up_to: int, last_seq: int = 20, epoch: str = EPOCH) -> Dict[str, Any]:
    outbox = {"depth": 0, "oldest_unacked_age_s": None, "last_seq": last_seq, "acked_up_to": acked_up_to,
              "epoch": epoch}  # fmt: skip
    payload = {"schema": "edge.stats/1", "device_id": DEVICE, "at": "2026-03-02T08:00:00+00:00", "interval_s": 60,
               "uptime_s": 100, "cameras": [], "outbox": outbox}  # fmt: skip
    validate("edge.stats/1", payload)
    return payload


def ack(up_to_seq: int, seqs: Optional[List[int]] = None, epoch: str = EPOCH, **more: Any) -> Dict[str, Any]:
    """An edge.ack/1 payload as the central sends it."""
    payload: Dict[str, Any] = {"schema": "edge.ack/1", "epoch": epoch, "up_to_seq": up_to_seq}
    if seqs:
        payload["seqs"] = seqs
    return {**payload, **more}


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

    def last_ack(self, epoch: str = EPOCH) -> Optional[Dict[str, Any]]:
        """The latest ack of `epoch` (requests to send again left out)."""
        with self.lock:
            return next((a for a in reversed(self.acks) if a["epoch"] == epoch and "resend_from" not in a), None)

    def acked(self, epoch: str = EPOCH) -> Set[int]:
        """Every seq of `epoch` some ack confirmed, as the box's outbox applies them (each ack on its own: with
        several central workers, the ack that arrives last need not be the one that covers the most)."""
        with self.lock:
            done: Set[int] = set()
            for a in self.acks:
                if a["epoch"] == epoch and "resend_from" not in a:
                    done.update(range(1, int(a.get("up_to_seq", 0)) + 1))
                    done.update(int(s) for s in a.get("seqs", []))
            return done

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def open_central(broker: Mosquitto, db: Path, **kwargs: Any) -> Central:
    central = Central("127.0.0.1", broker.port, db, client_id=kwargs.pop("client_id", "central-test"), **kwargs)
    central.start()
    assert central.wait_connected(5)
    return central
