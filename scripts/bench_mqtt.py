"""How fast the MQTT outbox delivers, against a local mosquitto and a paho "central" that acks what it has.

    .venv/bin/python scripts/bench_mqtt.py [--events 5000] [--backlog 10000] [--repeat 3] [--skip-default-drain]

(1) live throughput: events appended quickly (5 per step, as a busy pipeline would) while connected; the time
    from the first append until the central server has acknowledged all of them -> events/s.
(2) backlog drain: events stored an hour ago while the broker was down; start the broker; the time until all are
    acknowledged, with backlog_rate set high and with the default (200/s), plus how long a live event appended
    during the drain takes to reach the central server (it must not wait behind the backlog).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Set

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.attendance import AttendanceEvent, EventType  # noqa: E402
from edge.config import DeviceConfig  # noqa: E402
from edge.mqtt.contract import MqttConfig, Topics  # noqa: E402
from edge.mqtt.link import Link, LinkInfo  # noqa: E402
from edge.store import EventContext, EventStore  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"
DEVICE = DeviceConfig(id="bench-1", site="lab")
TOPICS = Topics.of("edge/v1", DEVICE.site, DEVICE.id)
INFO = LinkInfo(software_version="bench", model_id="sface-int8", config_hash="bench", gallery_version=0)
HIGH_RATE = 1_000_000.0


class Broker:
    """mosquitto on a free loopback port, persistence in a temp folder."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        conf = folder / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""  # as root it would switch to "mosquitto" otherwise
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {folder}/\n"
            f"max_queued_messages 100000\nmax_inflight_messages 100\n{user}"
        )
        self.conf = conf
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Central:
    """Receives events, acks up to the highest contiguous seq every 10 ms, notes when each seq first arrived."""

    def __init__(self, port: int, client_id: str) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.have: Set[int] = set()
        self.arrived: Dict[int, float] = {}
        self.up_to = self.acked = 0
        self.epoch = ""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(TOPICS.events, qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self.on_message
        self.client.connect_async("127.0.0.1", port, 30)
        self.client.loop_start()
        self.acker = threading.Thread(target=self.ack_loop, daemon=True)
        self.acker.start()

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        payload = json.loads(message.payload)
        seq = int(payload["seq"])
        with self.lock:
            self.epoch = payload["epoch"]
            self.arrived.setdefault(seq, time.monotonic())
            self.have.add(seq)
            while self.up_to + 1 in self.have:
                self.up_to += 1

    def ack_loop(self) -> None:
        while not self.stop.wait(0.01):
            with self.lock:
                up_to = self.up_to
                epoch = self.epoch
            if up_to > self.acked:
                ack = {"schema": "edge.ack/1", "epoch": epoch, "up_to_seq": up_to}
                self.client.publish(TOPICS.ack, json.dumps(ack), qos=1)
                self.acked = up_to

    def close(self) -> None:
        self.stop.set()
        self.acker.join(2)
        self.client.disconnect()
        self.client.loop_stop()


def events(n: int) -> List[AttendanceEvent]:
    now = datetime.now(timezone.utc)
    return [
        AttendanceEvent(EventType.ENTRY, f"p{i}", "door-in", now, now, "day", f"t{i}", 0.8, 0.2, 5, 0.9)
        for i in range(n)
    ]


def context(stored_at: float) -> EventContext:
    return EventContext(gallery_version=0, model_id="sface-int8", mono_time=time.monotonic(), wall_time=stored_at)


def wait_all_acked(store: EventStore, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.oldest_unacked() is None:
            return True
        time.sleep(0.01)
    return False


def config(port: int, backlog_rate: float) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1",
        port=port,
        backlog_rate=backlog_rate,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        redeliver_after_s=30.0,
    )


def live_throughput(folder: Path, n: int, backlog_rate: float) -> float:
    """Events/s from the first append until all are acknowledged (5 events per append, as fast as possible)."""
    broker = Broker(folder)
    broker.start()
    central = Central(broker.port, "central-live")
    central.ready.wait(5)
    with EventStore(folder / "edge.db", DEVICE.id) as store:
        link = Link(config(broker.port, backlog_rate), DEVICE, store.path, INFO)
        link.start()
        while not link.connected:
            time.sleep(0.01)
        started = time.monotonic()
        for _ in range(n // 5):
            store.append(events(5), context(time.time()))
            link.notify_new_events()
        appended = time.monotonic() - started
        ok = wait_all_acked(store, 120)
        elapsed = time.monotonic() - started
        link.close()
    central.close()
    broker.stop()
    if not ok:
        raise RuntimeError("not all events were acknowledged in 120 s")
    print(
        f"  live: {n} events appended in {appended:.2f} s, all acked after {elapsed:.2f} s "
        f"-> {n / elapsed:,.0f} events/s"
    )
    return n / elapsed


def backlog_drain(folder: Path, n: int, backlog_rate: float) -> float:
    """Seconds from the broker's start until `n` events stored an hour ago (broker down) are all acknowledged."""
    broker = Broker(folder)
    broker.start()
    central = Central(broker.port, "central-drain")  # a persistent session: the broker keeps its messages
    central.ready.wait(5)
    broker.stop()
    with EventStore(folder / "edge.db", DEVICE.id) as store:
        link = Link(config(broker.port, backlog_rate), DEVICE, store.path, INFO)
        link.start()
        hour_ago = time.time() - 3600
        for _ in range(n // 100):
            store.append(events(100), context(hour_ago))
        link.notify_new_events()
        started = time.monotonic()
        broker.start()
        latencies: List[float] = []
        while store.oldest_unacked() is not None and time.monotonic() - started < 600:
            time.sleep(0.5)
            if store.oldest_unacked() is not None and len(latencies) < 5 and time.monotonic() - started > 1:
                latencies.append(live_latency(store, link, central))
        elapsed = time.monotonic() - started
        link.close()
    central.close()
    broker.stop()
    late = (
        f", live events during the drain reached central in {statistics.median(latencies) * 1000:.0f} ms "
        f"(median of {len(latencies)})"
        if latencies
        else ""
    )
    print(
        f"  backlog: {n} events, backlog_rate {backlog_rate:g}/s: all acked {elapsed:.2f} s after the broker "
        f"started -> {n / elapsed:,.0f} events/s{late}"
    )
    return elapsed


def live_latency(store: EventStore, link: Link, central: Central) -> float:
    appended = time.monotonic()
    seq = store.append(events(1), context(time.time()))[0].seq
    link.notify_new_events()
    while seq not in central.arrived and time.monotonic() - appended < 30:
        time.sleep(0.001)
    return central.arrived.get(seq, time.monotonic()) - appended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--backlog", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-default-drain", action="store_true", help="skip the slow drain at 200 events/s")
    args = parser.parse_args()
    if not Path(MOSQUITTO).is_file():
        raise SystemExit(f"{MOSQUITTO} not found (Debian package mosquitto)")
    default_rate = MqttConfig().backlog_rate
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def run(label: str, i: int) -> Path:
            folder = root / f"{label}-{i}"
            folder.mkdir()
            return folder

        print(f"(1) live throughput, {args.events} events")
        high = [live_throughput(run("live-high", i), args.events, HIGH_RATE) for i in range(args.repeat)]
        default = [live_throughput(run("live-default", i), args.events, default_rate) for i in range(args.repeat)]
        print(f"(2) backlog drain, {args.backlog} events stored while the broker was down")
        drains = [backlog_drain(run("drain-high", i), args.backlog, HIGH_RATE) for i in range(args.repeat)]
        slow = None if args.skip_default_drain else backlog_drain(run("drain-default", 0), args.backlog, default_rate)
    print("\nsummary (medians)")
    print(f"  live, backlog_rate {HIGH_RATE:g}: {statistics.median(high):,.0f} events/s")
    print(
        f"  live, backlog_rate {default_rate:g} (default): {statistics.median(default):,.0f} events/s "
        f"(ratio {statistics.median(default) / statistics.median(high):.2f})"
    )
    drain = statistics.median(drains)
    print(
        f"  drain of {args.backlog}, backlog_rate {HIGH_RATE:g}: {drain:.2f} s ({args.backlog / drain:,.0f} events/s)"
    )
    if slow is not None:
        print(
            f"  drain of {args.backlog}, backlog_rate {default_rate:g} (default): {slow:.2f} s "
            f"({args.backlog / slow:,.0f} events/s = {args.backlog / slow / default_rate:.2f} x the set rate)"
        )


if __name__ == "__main__":
    main()
