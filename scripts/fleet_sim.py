"""A fleet of simulated boxes against the central's workers, on one machine: each box runs edge's real outbox and link
(edge/mqtt/link.py, edge/mqtt/outbox.py) over its own SQLite event file, with synthetic events; the central is N worker
processes (`edge central run --workers 1 --share-group ...`) on one store (SQLite file or postgresql:// URL) behind
a real mosquitto on a loopback port.

    .venv/bin/python scripts/fleet_sim.py --boxes 200 --events 20 --burst-s 60 --workers 2
    .venv/bin/python scripts/fleet_sim.py --boxes 200 --events 5 --burst-s 20 --outage-s 600 --outage-events 30 \
        --workers 2 --kill-every-s 20

Phases: (1) a 09:00 burst: every box stores --events events at random moments within --burst-s (live events);
(2) optional, --outage-s: the broker stops for the whole fleet while every box keeps storing --outage-events
events, then comes back (every box reconnects at once: a reconnect storm) and the backlog drains at each box's
backlog_rate; (3) the end: wait until every box has every event acknowledged, then compare every box's event ids
with the central's. With --kill-every-s a worker is SIGKILLed that often during the burst and the drain and started
again a second later (as `edge central run --workers N` does).

Prints (and with --json writes) the event-to-stored latency of the burst (p50/p95/max: the central's
first_received_at minus the box's stored_at, same clock), the drain: time from the
broker's return to 90% and to all of the outage's events stored, events/s over it, and the busiest second (the
central's pace; divide by the workers for per worker), and the missing / duplicated / foreign event ids. Exit
status 1 when anything is missing or duplicated or a box still waits for an ack.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SITE = "sim"


@dataclass(frozen=True)
class Plan:
    """What every box process is told (written as plan.json)."""

    port: int
    folder: str
    boxes: int
    events: int
    burst_s: float
    outage_s: float
    outage_events: int
    settle_s: float
    stats_s: float
    redeliver_s: float
    backlog_rate: float
    reconnect_max_s: float
    seed: int


def device_id(i: int) -> str:
    return f"box-{i:04d}"


# ------------------------------------------------------------------------------------------------ the box processes
def run_boxes(plan: Plan, first: int, last: int) -> None:
    """Boxes first..last-1 in this process: real Links over real EventStores; events on the plan's schedule."""
    from edge.attendance import AttendanceEvent, EventType
    from edge.config import DeviceConfig
    from edge.mqtt.contract import MqttConfig
    from edge.mqtt.link import Link, LinkInfo
    from edge.store import EventContext, EventStore

    logging.getLogger("edge").setLevel(logging.ERROR)  # a line per box and reconnect would drown the output
    folder = Path(plan.folder)
    config = MqttConfig(host="127.0.0.1", port=plan.port, keepalive_s=10, reconnect_min_s=0.5,
                        reconnect_max_s=plan.reconnect_max_s, redeliver_after_s=plan.redeliver_s,
                        backlog_rate=plan.backlog_rate, live_window_s=60.0)  # fmt: skip
    stores: Dict[int, EventStore] = {}
    links: Dict[int, Link] = {}
    for i in range(first, last):
        db = folder / "boxes" / f"{device_id(i)}.db"
        stores[i] = EventStore(db, device_id(i), init=True)
        links[i] = Link(config, DeviceConfig(id=device_id(i), site=SITE), db, LinkInfo("sim", "sim-model", "sim", 1))
        links[i].start()
    deadline = time.monotonic() + 60
    while not all(link.connected for link in links.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"READY {sum(link.connected for link in links.values())}/{len(links)}", flush=True)
    go = folder / "go.json"
    while not go.exists():
        time.sleep(0.05)
    t0 = json.loads(go.read_text())["t0"]
    rng = random.Random(plan.seed * 100_003 + first)
    due: List[Tuple[float, int, int]] = []  # wall time, box, n-th event
    t1 = t0 + plan.burst_s + plan.settle_s
    for i in range(first, last):
        for n in range(plan.events):
            due.append((t0 + rng.uniform(0, plan.burst_s), i, n))
        for n in range(plan.outage_events):
            due.append((t1 + rng.uniform(0, plan.outage_s), i, plan.events + n))
    for i in range(first, last):  # staggered stats
        due.append((t0 + rng.uniform(0, plan.stats_s), i, -1))
    heapq.heapify(due)
    stop = folder / "stop"
    started = time.monotonic()
    while not stop.exists():
        if not due or due[0][0] > time.time():
            time.sleep(min(0.05, max(0.0, due[0][0] - time.time())) if due else 0.05)
            continue
        at, i, n = heapq.heappop(due)
        if n < 0:
            publish_stats(links[i], device_id(i), plan.stats_s, time.monotonic() - started)
            heapq.heappush(due, (at + plan.stats_s, i, -1))
            continue
        now = datetime.now(timezone.utc)
        event = AttendanceEvent(EventType.ENTRY, f"p{i}-{n}", "door", now, now, now.date().isoformat(), f"t{n}",
                                0.8, 0.2, 5, 0.9)  # fmt: skip
        stores[i].append([event], EventContext(gallery_version=1, model_id="sim-model", mono_time=time.monotonic(),
                                               wall_time=time.time()))  # fmt: skip
        links[i].notify_new_events()
    for i in links:
        links[i].close()
        stores[i].close()


def publish_stats(link: Any, device: str, interval: float, uptime: float) -> None:
    payload = {"schema": "edge.stats/1", "device_id": device, "at": datetime.now(timezone.utc).isoformat(),
               "interval_s": interval, "uptime_s": round(uptime, 1), "cameras": [],
               "outbox": link.outbox_stats()}  # fmt: skip
    link.publish_stats(payload)


# ------------------------------------------------------------------------------------------------ the coordinator
class Workers:
    """The central's worker processes; kill() SIGKILLs one, tick() starts again those dead for a second."""

    def __init__(self, n: int, port: int, db: str, folder: Path) -> None:
        self.n, self.port, self.db, self.folder = n, port, db, folder
        self.procs: Dict[int, subprocess.Popen[bytes]] = {}
        self.dead_since: Dict[int, float] = {}
        self.kills = 0
        for i in range(n):
            self._start(i)

    def _start(self, i: int) -> None:
        log = open(self.folder / f"worker-{i}.log", "ab")  # noqa: SIM115 - kept by the child
        argv = [sys.executable, "-m", "edge", "central", "run", "--workers", "1", "--share-group", "sim",
                "--worker-id", f"sim-{i}", "--db", self.db, "--host", "127.0.0.1", "--port", str(self.port),
                "--quiet"]  # fmt: skip
        self.procs[i] = subprocess.Popen(argv, stdout=log, stderr=log, cwd=REPO)
        self.dead_since.pop(i, None)

    def kill(self, rng: random.Random) -> None:
        alive = [i for i, p in self.procs.items() if p.poll() is None]
        if alive:
            i = rng.choice(alive)
            self.procs[i].send_signal(signal.SIGKILL)
            self.procs[i].wait()
            self.dead_since[i] = time.monotonic()
            self.kills += 1

    def tick(self) -> None:
        for i, since in list(self.dead_since.items()):
            if time.monotonic() - since >= 1.0:
                self._start(i)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def central_count(store: Any) -> int:
    row = store.backend.one("SELECT count(*) FROM events WHERE site = ?", [SITE])
    return int(row[0]) if row else 0


def box_ids(folder: Path, boxes: int) -> Tuple[Dict[str, Set[str]], int]:
    """Every box's event ids, and how many are not acknowledged yet."""
    ids: Dict[str, Set[str]] = {}
    unacked = 0
    for i in range(boxes):
        conn = sqlite3.connect(f"file:{folder / 'boxes' / (device_id(i) + '.db')}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT event_id, acked_at FROM events").fetchall()
        finally:
            conn.close()
        ids[device_id(i)] = {r[0] for r in rows}
        unacked += sum(1 for r in rows if r[1] is None)
    return ids, unacked


def wait_phase(until: float, workers: Workers, kill_every_s: float, rng: random.Random, done: Any = None) -> bool:
    """Sleep until `until` (wall time) or `done()`, killing a worker every kill_every_s; whether done() came true."""
    next_kill = time.monotonic() + kill_every_s if kill_every_s > 0 else math.inf
    while time.time() < until:
        workers.tick()
        if time.monotonic() >= next_kill:
            workers.kill(rng)
            next_kill = time.monotonic() + kill_every_s
        if done is not None and done():
            return True
        time.sleep(0.5)
    return False


def percentile(values: List[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def measure(db: str, t0: float, plan: Plan, drain_from: Optional[float]) -> Dict[str, Any]:
    from edge.central.store import CentralStore

    store = CentralStore(db)
    try:
        rows = store.backend.query(
            "SELECT event_id, device_id, payload, first_received_at, deliveries FROM events WHERE site = ?", [SITE]
        )
    finally:
        store.close()
    latencies, drained_at, deliveries = [], [], 0
    for _, _, payload, received, count in rows:
        stored_at = datetime.fromisoformat(json.loads(payload)["stored_at"]).timestamp()
        got = datetime.fromisoformat(received).timestamp()
        deliveries += int(count) - 1
        if drain_from is None or stored_at < t0 + plan.burst_s + plan.settle_s:  # the burst, late ones too
            latencies.append(got - stored_at)
        else:
            drained_at.append(got)
    out: Dict[str, Any] = {
        "burst_events": len(latencies),
        "latency_p50_s": round(percentile(latencies, 0.5), 3),
        "latency_p95_s": round(percentile(latencies, 0.95), 3),
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "redeliveries": deliveries,
    }
    if drain_from is not None and drained_at:
        drained_at.sort()
        per_second: Dict[int, int] = {}
        for got in drained_at:
            per_second[int(got - drain_from)] = per_second.get(int(got - drain_from), 0) + 1
        out["drain_events"] = len(drained_at)
        out["drain_s"] = round(drained_at[-1] - drain_from, 2)
        out["drain_90pct_s"] = round(drained_at[int(0.9 * len(drained_at)) - 1] - drain_from, 2)
        out["drain_events_per_s"] = round(len(drained_at) / max(drained_at[-1] - drain_from, 1e-9), 1)
        out["drain_peak_events_per_s"] = max(per_second.values())  # the central's pace: the busiest second
    return out


def coordinate(args: argparse.Namespace) -> int:
    from tests.support import Mosquitto, free_port

    folder = Path(args.folder or tempfile.mkdtemp(prefix="fleet-sim-"))
    (folder / "boxes").mkdir(parents=True, exist_ok=True)
    db = args.db or str(folder / "central.db")
    broker = Mosquitto(folder / "broker", free_port(), extra="max_inflight_messages 1000\n").start()
    plan = Plan(broker.port, str(folder), args.boxes, args.events, args.burst_s, args.outage_s, args.outage_events,
                args.settle_s, args.stats_s, args.redeliver_s, args.backlog_rate, args.reconnect_max_s, args.seed)  # fmt: skip
    (folder / "plan.json").write_text(json.dumps(asdict(plan)))
    rng = random.Random(args.seed)
    from edge.central.store import CentralStore

    watch = CentralStore(db)  # migrations once, before the workers race for them; then the count of what is stored
    workers = Workers(args.workers, broker.port, db, folder)
    procs: List[subprocess.Popen[str]] = []
    per = math.ceil(args.boxes / args.box_procs)
    result: Dict[str, Any] = {"boxes": args.boxes, "workers": args.workers, "db": "postgresql" if "://" in db else "sqlite",
                              "load_before": os.getloadavg()[0]}  # fmt: skip
    try:
        for first in range(0, args.boxes, per):
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--box-process", str(folder / "plan.json"), str(first),
                 str(min(args.boxes, first + per))], stdout=subprocess.PIPE, text=True, cwd=REPO))  # fmt: skip
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line.startswith("READY"):
                raise SystemExit(f"a box process did not start: {line!r}")
        t0 = time.time() + 1.0
        (folder / "go.json").write_text(json.dumps({"t0": t0}))
        total_burst = args.boxes * args.events
        wait_phase(t0 + args.burst_s, workers, args.kill_every_s, rng)
        wait_phase(t0 + args.burst_s + args.settle_s, workers, 0, rng)
        drain_from = None
        if args.outage_s > 0:
            broker.stop()  # the whole fleet loses the broker
            t1 = t0 + args.burst_s + args.settle_s
            while time.time() < t1 + args.outage_s:
                time.sleep(0.2)
            broker.start()
            drain_from = time.time()
        expected = total_burst + args.boxes * args.outage_events
        finished = wait_phase(time.time() + args.timeout_s, workers, args.kill_every_s if drain_from else 0, rng,
                              lambda: central_count(watch) >= expected)  # fmt: skip
        result["stored_in_time"] = finished
        for _ in range(int(args.timeout_s)):  # every box sees its last acks
            workers.tick()
            _, unacked = box_ids(folder, args.boxes)
            if unacked == 0:
                break
            time.sleep(1.0)
        result["load_after"] = os.getloadavg()[0]
        result["worker_kills"] = workers.kills
        result.update(measure(db, t0, plan, drain_from))
    finally:
        (folder / "stop").write_text("")
        for proc in procs:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        workers.stop()
        broker.stop()
        watch.close()
    result.update(compare(folder, args.boxes, db))
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if result["missing"] == 0 and result["duplicated"] == 0 and result["unacked_at_boxes"] == 0 else 1


def compare(folder: Path, boxes: int, db: str) -> Dict[str, Any]:
    """Every box's event ids against the central's: missing, stored twice, or not a box's at all."""
    from edge.central.store import CentralStore

    ids, unacked = box_ids(folder, boxes)
    store = CentralStore(db)
    try:
        rows = store.backend.query("SELECT device_id, event_id FROM events WHERE site = ?", [SITE])
    finally:
        store.close()
    central: Dict[str, List[str]] = {}
    for device, event_id in rows:
        central.setdefault(device, []).append(event_id)
    missing = sum(len(ids[d] - set(central.get(d, []))) for d in ids)
    duplicated = sum(len(v) - len(set(v)) for v in central.values())
    foreign = sum(len(set(v) - ids.get(d, set())) for d, v in central.items())
    return {"box_events": sum(len(v) for v in ids.values()), "central_events": len(rows), "missing": missing,
            "duplicated": duplicated, "foreign": foreign, "unacked_at_boxes": unacked}  # fmt: skip


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--box-process":
        plan = Plan(**json.loads(Path(sys.argv[2]).read_text()))
        run_boxes(plan, int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20)
    parser.add_argument("--events", type=int, default=20, help="Events per box in the burst.")
    parser.add_argument("--burst-s", type=float, default=60.0, help="The burst's length (the 09:00 minute).")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--db", help="The central's store: a SQLite file (default: in the folder) or postgresql://.")
    parser.add_argument("--outage-s", type=float, default=0.0, help="Broker outage for the whole fleet (0: none).")
    parser.add_argument("--outage-events", type=int, default=0, help="Events per box stored during the outage.")
    parser.add_argument("--settle-s", type=float, default=5.0, help="Pause between the burst and the outage.")
    parser.add_argument("--kill-every-s", type=float, default=0.0, help="SIGKILL a worker this often (0: never).")
    parser.add_argument("--box-procs", type=int, default=0, help="Processes the boxes run in (0: one per 100).")
    parser.add_argument("--stats-s", type=float, default=10.0, help="Each box's stats interval.")
    parser.add_argument("--redeliver-s", type=float, default=30.0, help="The boxes' redeliver_after_s.")
    parser.add_argument("--backlog-rate", type=float, default=200.0, help="The boxes' backlog_rate (events/s).")
    parser.add_argument("--reconnect-max-s", type=float, default=5.0, help="The boxes' reconnect_max_s.")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="Longest wait for the drain and the acks.")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--folder", help="Where the files go (default: a new temporary folder).")
    parser.add_argument("--json", help="Also write the result here.")
    args = parser.parse_args()
    args.box_procs = args.box_procs or max(1, math.ceil(args.boxes / 100))
    raise SystemExit(coordinate(args))


if __name__ == "__main__":
    main()
