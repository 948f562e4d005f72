"""How the reference central (edge.central) keeps up with a burst of events: acks sent per event and time in paho's
network thread, against a local mosquitto and a plain paho client playing the box.

    .venv/bin/python scripts/bench_central.py [--events 2000]

Prints events/s until the last one is acknowledged, the number of acks the box received, and the mean time the
central's message callback took per message (what keeps paho's network thread from its keepalives).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.central.server import Central  # noqa: E402
from edge.mqtt.contract import SCHEMA_DIR, Topics, encode  # noqa: E402
from tests.support import Mosquitto, free_port  # noqa: E402

SITE, DEVICE, EPOCH = "lab", "bench-1", "0123456789abcdef"


def event(seq: int) -> Dict[str, Any]:
    with_epoch = "epoch" in json.loads((SCHEMA_DIR / "event.schema.json").read_text())["properties"]
    event_id = f"{DEVICE}-{EPOCH}-{seq:010d}" if with_epoch else f"{DEVICE}-{seq:010d}"
    payload = {
        "schema": "edge.event/1", "event_id": event_id, "seq": seq, "prev_seq": seq - 1 if seq > 1 else None,
        "device_id": DEVICE, "site": SITE, "type": "entry", "person_id": f"s{seq}", "camera_id": "door",
        "at": "2026-03-02T08:00:00+09:00", "decided_at": "2026-03-02T08:00:02+09:00", "session": "2026-03-02",
        "track_id": f"door-{seq}", "score": 0.71, "margin": 0.2, "frames": 5, "quality": 0.8,
        "gallery_version": 3, "model_id": "sface-int8", "stored_at": "2026-03-01T23:00:02+00:00",
        "historical": False,
    }  # fmt: skip
    if with_epoch:
        payload["epoch"] = EPOCH
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    topics = Topics.of("edge/v1", SITE, DEVICE)
    acks: List[Dict[str, Any]] = []
    done = threading.Event()

    def on_ack(client: Any, userdata: Any, message: Any) -> None:
        ack = json.loads(message.payload)
        acks.append(ack)
        if ack["up_to_seq"] >= args.events:
            done.set()

    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker", free_port()).start()
        central = Central("127.0.0.1", broker.port, Path(tmp) / "central.db", client_id="bench-central")
        spent: List[float] = []
        handle = central._on_message

        def timed(client: Any, userdata: Any, message: Any) -> None:
            start = time.perf_counter()
            handle(client, userdata, message)
            spent.append(time.perf_counter() - start)

        central._client.on_message = timed
        box = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-box")
        box.max_inflight_messages_set(100)
        box.on_message = on_ack
        box.connect("127.0.0.1", broker.port)
        box.subscribe(topics.ack, 1)
        box.loop_start()
        try:
            central.start()
            assert central.wait_connected(10)
            time.sleep(0.5)
            raws = [encode(event(seq)) for seq in range(1, args.events + 1)]
            start = time.monotonic()
            for raw in raws:
                box.publish(topics.events, raw, qos=1)
            finished = done.wait(120)
            elapsed = time.monotonic() - start
        finally:
            box.disconnect()
            box.loop_stop()
            central.close()
            broker.kill()
    print(
        f"{args.events} events: {'all acknowledged' if finished else 'NOT all acknowledged'} in {elapsed:.2f} s "
        f"({args.events / elapsed:.0f} events/s); {len(acks)} acks received "
        f"({len(acks) / args.events:.3f} per event); callback mean {1000 * sum(spent) / max(1, len(spent)):.2f} ms, "
        f"max {1000 * max(spent, default=0):.1f} ms per message"
    )


if __name__ == "__main__":
    main()
