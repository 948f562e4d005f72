"""The long fault run (scripts/fault_run.py), once and short: box SIGKILLs (one during a broker outage), broker
restarts and a central kill, then every event of the box's SQLite is in the central's exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
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
