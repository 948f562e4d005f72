"""The long fault run: no attendance event lost or stored twice through box SIGKILLs, broker outages and central kills.

    .venv/bin/python scripts/fault_run.py [--runs 5] [--seconds 75] [--seed 1] [--kills 25] [--json]

Each run, in a fresh folder (kept with --keep DIR):

- a real mosquitto (Debian's /usr/sbin/mosquitto, persistence on) on a free loopback port, set up as deployed:
  the ACL, password file and per-login secrets written by `edge broker`, no anonymous clients (--open-broker:
  none of that);
- the reference central, `edge central run`, in its own process (so it can be SIGKILLed and restarted);
- the box: the real daemon, `edge run` with no cameras, and beside it the pipeline's stand-in (`fault_run.py
  inject`), a process that appends synthetic attendance events to the daemon's SQLite file in bursts (about
  --rate events/s on average: twice that for a second, then a quiet second). The daemon's outbox delivers them.
  Killing the box SIGKILLs both processes (an append may be cut short); both are started again.

During --seconds: --kills box SIGKILLs (one inside each broker outage; most wait until the box runs, a fifth
strike at once, during start-up if it is still starting), --broker-restarts broker outages of a few
seconds (alternately SIGTERM, which saves the broker's state, and SIGKILL, which loses its last second), and
--central-kills central SIGKILLs. Then the drain: the injector stops, everything is up, and the run waits until
every event in the box's SQLite is acknowledged and stored by the central (at most --drain-timeout seconds).

Per run it prints: events (in the box's SQLite), box kills, broker restarts, central kills, missing (box event ids
not in the central's SQLite), duplicated (event ids, or injected events, stored more than once by the central),
extra (central event ids the box does not have), stuck (box events unacknowledged at the end of the drain) and the
drain time. The exit status is 1 when any run lost, duplicated, invented or left an event behind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support import Mosquitto, free_port, mosquitto_unavailable  # noqa: E402

SITE, DEVICE = "lab", "fault-box"
MARK = "fault"
"""Prefix of the injected events' track ids: `fault-<injector>-<n>` names each injected event once."""
BOOT_WAIT_S = 10.0
EARLY_KILLS = 0.2
"""Share of box kills that do not wait for the box to be running (they may land during its start-up)."""
STEP_S = 0.02
MAX_STEP_EVENTS = 25


# ---------------------------------------------------------------- the pipeline's stand-in (a child process)


def inject(db: Path, rate: float, seed: int) -> None:
    """Append synthetic events to the box's store until killed: bursts of 2 x rate events/s for a second, then a
    quiet second. Each step is one transaction, as the pipeline writes one machine step."""
    from edge.attendance import AttendanceEvent, EventType
    from edge.store import EventContext, EventStore, StoreError

    rng = random.Random(seed)
    tag = f"{MARK}-{os.getpid()}-{rng.randrange(16**6):06x}"
    store = None
    while store is None:
        try:
            store = EventStore(db, DEVICE)
        except StoreError as exc:
            print(f"inject: cannot open the store yet: {exc}", file=sys.stderr, flush=True)
            time.sleep(0.5)
    n, owed, start = 0, 0.0, time.monotonic()
    types = [EventType.UNKNOWN_FACE, EventType.ENTRY, EventType.EXIT]
    while True:
        time.sleep(STEP_S)
        burst = int(time.monotonic() - start) % 2 == 0
        owed += 2 * rate * STEP_S if burst else 0.0
        while owed >= 1:
            size = min(int(owed), rng.randint(1, MAX_STEP_EVENTS))
            at = datetime.now(timezone.utc)
            events = []
            for k in range(size):
                kind = types[(n + k) % len(types)]
                person = None if kind is EventType.UNKNOWN_FACE else f"p{(n + k) % 97}"
                events.append(AttendanceEvent(kind, person, "door", at, at, None, f"{tag}-{n + k}", 0.9, 0.2, 5, 0.6))
            context = EventContext(
                gallery_version=0, model_id="fault", mono_time=time.monotonic(), wall_time=time.time()
            )
            try:
                store.append(events, context)
            except StoreError as exc:  # busy or full: keep them and try again, as the pipeline does
                print(f"inject: append refused, retrying: {exc}", file=sys.stderr, flush=True)
                time.sleep(0.1)
                continue
            n += size
            owed -= size


# ---------------------------------------------------------------- processes


class Child:
    """One restartable child process, its output appended to a log file."""

    def __init__(self, name: str, argv: List[str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.unexpected_exits: List[int] = []
        self.starts = 0
        self.log_from = 0

    def start(self) -> None:
        self.starts += 1
        self.log_from = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until this start of the daemon said "edge running" (it runs: outbox, link and all)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log, "rb") as log:
                log.seek(self.log_from)
                if b"edge running:" in log.read():
                    return True
            time.sleep(0.05)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Restart it if it ended by itself (noted: a box or central must not exit on its own)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected_exits.append(int(self.proc.returncode))
            self.start()

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGTERM and wait; the exit status (None when it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code: Optional[int] = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            code = None
        self.proc = None
        return code


def edge_argv(*args: str) -> List[str]:
    return [sys.executable, "-m", "edge", *args]


def write_box_config(folder: Path, db: Path, port: int, backlog_rate: float, login: Optional[Login]) -> Path:
    path = folder / "edge.yml"
    credentials = f"  username: {DEVICE}\n  password_file: {login.box_secret}\n" if login else ""
    path.write_text(
        f"device: {{id: {DEVICE}, site: {SITE}, timezone: UTC}}\n"
        f"storage: {{database: {db}}}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  stats_interval_s: 1.0\n  redeliver_after_s: 5.0\n"
        f"  reconnect_min_s: 0.2\n  reconnect_max_s: 1.0\n  keepalive_s: 5\n  live_window_s: 2.0\n"
        f"  backlog_rate: {backlog_rate}\n{credentials}"
        "cameras: []\n"
    )
    return path


@dataclass(frozen=True)
class Login:
    """The broker as deployed: `edge broker` wrote the ACL, the password file and each login's secret file."""

    conf: str
    """The mosquitto.conf lines `edge broker conf` printed."""
    box_secret: Path
    central_secret: Path


def set_up_logins(folder: Path) -> Login:
    etc = folder / "etc"
    passwd, acl = etc / "edge.passwd", etc / "edge.acl"
    box_secret, central_secret = etc / "box.secret", etc / "central.secret"

    def edge(*args: str) -> str:
        done = subprocess.run(edge_argv("broker", *args), capture_output=True, text=True, timeout=60, cwd=REPO)
        if done.returncode:
            raise RuntimeError(f"edge broker {args[0]} failed: {done.stdout}{done.stderr}")
        return done.stdout

    edge("acl", "-o", str(acl))
    edge("add-central", "--password-file", str(passwd), "--secret-out", str(central_secret))
    edge("add-box", "--password-file", str(passwd), "--site", SITE, "--device", DEVICE, "--secret-out", str(box_secret))
    return Login(edge("conf", "--password-file", str(passwd), "--acl-file", str(acl)), box_secret, central_secret)


# ---------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds after the start of the run."""
    kind: str
    """box_kill, broker_down, broker_up, central_kill."""
    down_s: float = 0.0
    hard: bool = False
    """broker_down: SIGKILL instead of SIGTERM. box_kill: kill at once, even a box still starting (otherwise the
    kill waits until the box runs: say its "edge running", at most BOOT_WAIT_S)."""


def schedule(rng: random.Random, seconds: float, kills: int, broker_restarts: int, central_kills: int) -> List[Fault]:
    """The run's faults by time. Broker outages are spread over the run; the last one lasts until the end of the
    fault phase (the broker comes back as the drain starts), so the drain begins with a backlog and a box that was
    killed while the broker was away. Each outage holds one box kill."""
    faults: List[Fault] = []
    spread = max(0, broker_restarts - 1)
    span = seconds * 0.7
    for i in range(broker_restarts):
        last = i == broker_restarts - 1
        down = rng.uniform(3.0, 6.0) if last else rng.uniform(2.0, min(6.0, span / max(1, spread) * 0.5))
        start = seconds - down if last else seconds * 0.1 + span * (i + rng.uniform(0.1, 0.5)) / spread
        faults.append(Fault(start, "broker_down", hard=i % 2 == 1))
        if not last:
            faults.append(Fault(start + down, "broker_up"))
        if i < kills:  # the box dies while the broker is away
            at = start + rng.uniform(0.3, down * 0.7)
            faults.append(Fault(at, "box_kill", rng.uniform(0.05, 1.0), hard=rng.random() < EARLY_KILLS))
    for _ in range(max(0, kills - broker_restarts)):
        at = rng.uniform(1.0, seconds - 1.0)
        faults.append(Fault(at, "box_kill", rng.uniform(0.05, 1.0), hard=rng.random() < EARLY_KILLS))
    for _ in range(central_kills):
        faults.append(Fault(rng.uniform(1.0, seconds - 2.0), "central_kill", rng.uniform(0.5, 3.0)))
    return sorted(faults, key=lambda f: f.at)


# ---------------------------------------------------------------- one run


@dataclass
class RunResult:
    run: int
    seed: int
    events: int = 0
    box_kills: int = 0
    kills_in_outage: int = 0
    broker_restarts: int = 0
    central_kills: int = 0
    missing: int = 0
    duplicated: int = 0
    extra: int = 0
    stuck: int = 0
    drain_s: Optional[float] = None
    deliveries: int = 0
    historical: int = 0
    box_exits: List[int] = field(default_factory=list)
    central_exits: List[int] = field(default_factory=list)
    inject_exits: List[int] = field(default_factory=list)
    daemon_exit: Optional[int] = None
    tracebacks: int = 0
    ack_refusals: int = 0
    epochs: int = 0
    """Epochs of the box's database at the end (1: no start-up ever found committed rows lost)."""
    box_disconnects: int = 0
    """Times a running box lost the broker (broker outages, or the broker cutting it off for a missed keepalive)."""
    box_starts: int = 0
    box_ready: int = 0
    """Box starts, and those that got as far as "edge running" before the next kill."""
    """Box lives that logged refusing an ack (each box process logs a kind of refusal once)."""
    folder: str = ""

    @property
    def ok(self) -> bool:
        clean = self.missing == self.duplicated == self.extra == self.stuck == 0
        return clean and self.drain_s is not None and self.events > 0 and not self.inject_exits

    def line(self) -> str:
        drain = f"{self.drain_s:.1f} s" if self.drain_s is not None else "TIMED OUT"
        notes = [
            f"deliveries {self.deliveries}",
            f"historical {self.historical}",
            f"box starts {self.box_starts} ({self.box_ready} reached 'edge running')",
        ]
        if self.box_exits or self.central_exits or self.inject_exits:
            notes.append(
                f"exited on their own: box {self.box_exits}, central {self.central_exits}, injector {self.inject_exits}"
            )
        if self.daemon_exit != 0:
            notes.append(f"daemon SIGTERM exit {self.daemon_exit}")
        if self.tracebacks:
            notes.append(f"tracebacks in logs {self.tracebacks}")
        notes.append(f"box lost the broker {self.box_disconnects} times")
        if self.epochs != 1:
            notes.append(f"epochs {self.epochs}")
        if self.ack_refusals:
            notes.append(f"box lives that refused an ack {self.ack_refusals}")
        return (
            f"run {self.run} (seed {self.seed}): events {self.events}, box kills {self.box_kills} "
            f"({self.kills_in_outage} during a broker outage), broker restarts {self.broker_restarts}, "
            f"central kills {self.central_kills}, missing {self.missing}, duplicated {self.duplicated}, "
            f"extra {self.extra}, stuck {self.stuck}, drain {drain} [{', '.join(notes)}]"
            + ("" if self.ok else "  <-- LOSS")
        )


def box_rows(db: Path) -> List[Tuple[str, Optional[str], str]]:
    """(event_id, acked_at, track_id) of every event in the box's SQLite."""
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute("SELECT event_id, acked_at, track_id FROM events")]


def central_rows(db: Path) -> List[Tuple[str, int, Dict[str, Any]]]:
    """(event_id, deliveries, payload) of this box's events in the central's SQLite."""
    if not db.exists():
        return []
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
        try:
            rows = conn.execute("SELECT event_id, deliveries, payload FROM events WHERE device_id = ?", [DEVICE])
            return [(r[0], int(r[1]), json.loads(r[2])) for r in rows]
        except sqlite3.OperationalError:  # not created yet
            return []


def drained(box_db: Path, central_db: Path) -> bool:
    try:
        box = box_rows(box_db)
        if any(acked is None for _, acked, _ in box):
            return False
        return {i for i, _, _ in box} <= {i for i, _, _ in central_rows(central_db)}
    except sqlite3.Error:
        return False


def one_run(number: int, seed: int, args: argparse.Namespace, folder: Path) -> RunResult:
    rng = random.Random(seed)
    result = RunResult(run=number, seed=seed, folder=str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    box_db, central_db = folder / "box.db", folder / "central.db"
    login = None if args.open_broker else set_up_logins(folder)
    broker = Mosquitto(folder / "broker", free_port())
    if login is not None:  # no anonymous clients: the generated logins and ACL
        broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true\n", "") + login.conf)
    broker.start()
    config = write_box_config(folder, box_db, broker.port, args.backlog_rate, login)
    from edge.store import EventStore

    EventStore(box_db, DEVICE).close()  # the box's database exists before the box first starts
    daemon = Child("daemon", edge_argv("--config", str(config), "run"), folder / "daemon.log")
    injector = Child(
        "inject",
        [sys.executable, str(Path(__file__).resolve()), "inject", str(box_db), str(args.rate), str(seed)],
        folder / "inject.log",
    )
    central = Child(
        "central",
        edge_argv("central", "run", "--host", "127.0.0.1", "--port", str(broker.port), "--db", str(central_db))
        + (["--username", "edge-central", "--password-file", str(login.central_secret)] if login else []),
        folder / "central.log",
    )
    faults = schedule(rng, args.seconds, args.kills, args.broker_restarts, args.central_kills)
    broker_down = False
    try:
        central.start()
        daemon.start()
        injector.start()
        start = time.monotonic()
        for fault in faults:
            delay = start + fault.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            restart_exited(daemon, central, injector, result)
            if fault.kind == "broker_down":
                (broker.kill if fault.hard else broker.stop)()
                broker_down = True
            elif fault.kind == "broker_up":
                broker.start()
                broker_down = False
                result.broker_restarts += 1
            elif fault.kind == "box_kill":
                if not fault.hard:
                    daemon.wait_ready(BOOT_WAIT_S)
                daemon.kill()
                injector.kill()
                result.box_kills += 1
                result.kills_in_outage += int(broker_down)
                time.sleep(fault.down_s)
                daemon.start()
                injector.start()
            elif fault.kind == "central_kill":
                central.kill()
                result.central_kills += 1
                time.sleep(fault.down_s)
                central.start()
        remaining = start + args.seconds - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        injector.kill()  # no more events; the drain begins with everything up
        if broker_down:
            broker.start()
            result.broker_restarts += 1
        restart_exited(daemon, central, None, result)
        began = time.monotonic()
        while time.monotonic() - began < args.drain_timeout:
            if drained(box_db, central_db):
                result.drain_s = round(time.monotonic() - began, 1)
                break
            time.sleep(0.5)
            restart_exited(daemon, central, None, result)
        result.daemon_exit = daemon.stop()
        central.stop()
    finally:
        for child in (injector, daemon, central):
            child.kill()
        broker.kill()
    measure(result, box_db, central_db)
    for log in (folder / "daemon.log", folder / "central.log", folder / "inject.log"):
        if log.exists():
            result.tracebacks += log.read_text(errors="replace").count("Traceback")
    if (folder / "daemon.log").exists():
        text = (folder / "daemon.log").read_text(errors="replace")
        result.ack_refusals = text.count("rejected a message on ack")
        result.box_ready = text.count("edge running:")
        result.box_disconnects = text.count("disconnected from the broker")
    result.box_starts = daemon.starts
    return result


def restart_exited(daemon: Child, central: Child, injector: Optional[Child], result: RunResult) -> None:
    """Start again whatever ended by itself, noting its exit status (none of them may end on its own)."""
    pairs = [(daemon, result.box_exits), (central, result.central_exits)]
    if injector is not None:
        pairs.append((injector, result.inject_exits))
    for child, exits in pairs:
        before = len(child.unexpected_exits)
        child.check()
        exits.extend(child.unexpected_exits[before:])


def measure(result: RunResult, box_db: Path, central_db: Path) -> None:
    box = box_rows(box_db)
    with closing(sqlite3.connect(f"{box_db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
        try:
            result.epochs = int(conn.execute("SELECT count(*) FROM epochs").fetchone()[0])
        except sqlite3.OperationalError:  # a database from before epochs
            result.epochs = 1
    copy = central_rows(central_db)
    box_ids = {i for i, _, _ in box}
    copy_ids = [i for i, _, _ in copy]
    result.events = len(box)
    result.stuck = sum(1 for _, acked, _ in box if acked is None)
    result.missing = len(box_ids - set(copy_ids))
    result.extra = len(set(copy_ids) - box_ids)
    by_track: Dict[str, int] = {}
    for _, _, payload in copy:
        track = str(payload.get("track_id", ""))
        if track.startswith(MARK + "-"):
            by_track[track] = by_track.get(track, 0) + 1
    result.duplicated = (len(copy_ids) - len(set(copy_ids))) + sum(n - 1 for n in by_track.values() if n > 1)
    result.deliveries = sum(d for _, d, _ in copy)
    result.historical = sum(1 for _, _, p in copy if p.get("historical"))


# ---------------------------------------------------------------- main


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="Runs, each with a new seed (seed, seed+1, ...).")
    parser.add_argument("--seconds", type=float, default=75.0, help="Length of the fault phase of a run.")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the first run's schedule and events.")
    parser.add_argument("--kills", type=int, default=25, help="Box SIGKILLs per run.")
    parser.add_argument("--broker-restarts", type=int, default=3, help="Broker outages per run.")
    parser.add_argument("--central-kills", type=int, default=3, help="Central SIGKILLs per run.")
    parser.add_argument("--rate", type=float, default=250.0, help="Injected events per second (average).")
    parser.add_argument("--backlog-rate", type=float, default=400.0, help="The box's mqtt.backlog_rate.")
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="Seconds the drain may take.")
    parser.add_argument(
        "--open-broker",
        action="store_true",
        help="Anonymous broker, no ACL (default: the logins and ACL `edge broker` generates, as deployed).",
    )
    parser.add_argument("--keep", type=Path, help="Keep each run's folder (logs, databases) under this folder.")
    parser.add_argument("--json", action="store_true", help="Also print each run's result as one JSON line.")
    args = parser.parse_args(argv)
    if args.seconds < 10:
        parser.error("--seconds must be >= 10")
    return args


def main(argv: List[str]) -> int:
    if argv[:1] == ["inject"]:
        inject(Path(argv[1]), float(argv[2]), int(argv[3]))
        return 0
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # stop the children on the way out
    reason = mosquitto_unavailable()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    results: List[RunResult] = []
    out: IO[str] = sys.stdout
    for i in range(args.runs):
        seed = args.seed + i
        began = time.monotonic()
        if args.keep is not None:
            result = one_run(i + 1, seed, args, args.keep / f"run-{i + 1}-seed-{seed}")
        else:
            with tempfile.TemporaryDirectory(prefix="edge-fault-") as tmp:
                result = one_run(i + 1, seed, args, Path(tmp))
        results.append(result)
        print(f"{result.line()} ({time.monotonic() - began:.0f} s)", file=out, flush=True)
        if args.json:
            print(json.dumps({**asdict(result), "ok": result.ok}), file=out, flush=True)
    bad = [r.run for r in results if not r.ok]
    total = sum(r.events for r in results)
    print(
        f"{len(results)} runs, {total} events: "
        + ("0 missing, 0 duplicated, 0 extra, 0 stuck in every run" if not bad else f"LOSS in runs {bad}"),
        file=out,
        flush=True,
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
