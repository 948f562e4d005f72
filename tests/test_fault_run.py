"""The long fault run (scripts/fault_run.py), once and short: box SIGKILLs (one during a broker outage), broker
restarts and a central kill, then every event of the box's SQLite is in the central's exactly once."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from support import REPO, mosquitto_unavailable


def test_a_short_fault_run_loses_nothing(tmp_path: Path) -> None:
    reason = mosquitto_unavailable()
    if reason:
        pytest.skip(reason)
    args = ["--runs", "1", "--seconds", "30", "--seed", "11", "--kills", "8", "--broker-restarts", "2"]
    args += ["--central-kills", "2", "--rate", "150", "--drain-timeout", "120", "--keep", str(tmp_path), "--json"]
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fault_run.py"), *args], capture_output=True, text=True, timeout=300
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout + done.stderr
    run = lines[0]
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*/daemon.log"))
    assert run["events"] > 1000, done.stdout + logs
    assert (run["missing"], run["duplicated"], run["extra"], run["stuck"]) == (0, 0, 0, 0), done.stdout + logs
    assert run["drain_s"] is not None, done.stdout + logs
    assert run["box_kills"] == 8 and run["kills_in_outage"] >= 1, done.stdout
    assert run["broker_restarts"] == 2 and run["central_kills"] == 2, done.stdout
    assert run["box_exits"] == run["central_exits"] == run["inject_exits"] == [], (
        "none may exit on its own: " + done.stdout
    )
    assert run["daemon_exit"] == 0 and run["tracebacks"] == 0, done.stdout + logs
    assert run["epochs"] == 1, "a start-up took committed rows for lost: " + done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


def load_fault_run():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fault_run", REPO / "scripts" / "fault_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_run"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_comparison_counts_missing_duplicated_extra_and_stuck_events(tmp_path: Path) -> None:
    """The run's verdict is not vacuous: a box and a central copy that differ in each way are counted."""
    fault_run = load_fault_run()
    box, copy = tmp_path / "box.db", tmp_path / "central.db"
    with closing(sqlite3.connect(box)) as conn, conn:
        conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT, acked_at TEXT, track_id TEXT)")
        conn.execute("CREATE TABLE epochs (epoch TEXT, first_seq INTEGER)")
        conn.execute("INSERT INTO epochs VALUES ('0123456789abcdef', 1)")
        rows = [(1, "e1", "t", "fault-1-1"), (2, "e2", "t", "fault-1-2"), (3, "e3", None, "fault-1-3"),
                (4, "e4", "t", "fault-1-4")]  # fmt: skip
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    with closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("CREATE TABLE events (event_id TEXT PRIMARY KEY, device_id TEXT, deliveries INT, payload TEXT)")
        stored = [("e1", "fault-1-1"), ("e3", "fault-1-3"), ("e4", "fault-1-4"), ("e9", "fault-1-4"), ("x", "other")]
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, 1, ?)",
            [(i, fault_run.DEVICE, json.dumps({"track_id": t})) for i, t in stored],
        )
    result = fault_run.RunResult(run=1, seed=1)
    fault_run.measure(result, box, copy)
    # e2 missing; e4's event stored again as e9 (duplicated); e9 and x unknown to the box (extra); e3 unacked
    assert (result.events, result.missing, result.duplicated, result.extra, result.stuck) == (4, 1, 1, 2, 1)
    assert not result.ok
