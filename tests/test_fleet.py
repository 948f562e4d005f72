"""A fleet's central: workers sharing the boxes' messages through MQTT 5 shared subscriptions, acknowledging from the
store alone; a worker lost mid-batch loses nothing and stores nothing twice; the health tables and /metrics; and a
small run of the fleet simulator (real boxes' link and outbox code, real mosquitto, SQLite and PostgreSQL) with
workers SIGKILLed during the burst and the drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import pytest

from edge.central import fleet
from edge.central.ledger import ResendPacer
from edge.central.store import CentralStore
from edge.central.workers import Batch, Worker, settle_batch, shared_topics
from tests.central_box import DEVICE, EPOCH, SITE, FakeBox, ack, event, stats
from tests.pg import postgres, postgres_server  # noqa: F401, F811 - fixtures
from tests.support import REPO, Mosquitto, edge_command, free_port, mosquitto_unavailable, wait_until

KEY = (SITE, DEVICE, EPOCH)
needs_mosquitto = pytest.mark.skipif(mosquitto_unavailable() is not None, reason=str(mosquitto_unavailable()))


def stored_batch(store: CentralStore, seqs: List[int]) -> Batch:
    """What a worker's batch holds after storing these seqs of the test box (contiguous prev_seq)."""
    results = store.add_events([(SITE, event(s, s - 1 or None)) for s in seqs])
    assert all(r.new for r in results)
    return Batch(stored={KEY: list(seqs)}, events=len(seqs))


# acks from the store alone ---------------------------------------------------------------------------------------------
def test_two_workers_acking_interleaved_seqs_from_the_store_confirm_every_event() -> None:
    store = CentralStore(":memory:")
    # worker A stored 1, 2, 4 and worker B 3, 5 (the broker split the box's events); each knows only its own batch
    acks_a, marks_a, _ = settle_batch(store, stored_batch(store, [1, 2, 4]), {}, 0.0)
    store.save_ledgers(marks_a)
    assert acks_a == [(KEY, ack(2, [4]))]
    acks_b, marks_b, _ = settle_batch(store, stored_batch(store, [3, 5]), {}, 0.0)
    store.save_ledgers(marks_b)
    assert acks_b == [(KEY, ack(5))], "B sees A's seqs in the store: the contiguous mark covers all five"
    assert store.ledger_marks()[KEY].acked_up_to == 5 and store.ledger_marks()[KEY].stored_up_to == 5


def test_a_batch_whose_marks_were_never_saved_is_covered_by_the_next_one() -> None:
    store = CentralStore(":memory:")
    stored_batch(store, [1, 2, 3])  # a worker stored these, then died before saving marks or acking
    acks, marks, _ = settle_batch(store, stored_batch(store, [4]), {}, 0.0)
    assert acks == [(KEY, ack(4))] and marks[0][1].acked_up_to == 4


def test_stats_below_what_the_box_reported_halt_the_epoch_and_lost_events_are_asked_again() -> None:
    store = CentralStore(":memory:")
    batch = stored_batch(store, [1, 2])
    batch.stats[KEY] = (10, 8)  # the box took 1..8 as delivered: this copy has 1..2
    acks, marks, flags = settle_batch(store, batch, {}, 0.0)
    store.save_ledgers(marks)
    assert (KEY, {"schema": "edge.ack/1", "epoch": EPOCH, "up_to_seq": 0, "resend_from": 3}) in acks
    assert [f.kind for f in flags] == ["resend"]
    pacers = {KEY[:2]: ResendPacer()}
    assert pacers[KEY[:2]].due(0.0, 2)
    _, marks, flags = settle_batch(store, Batch(stats={KEY: (4, 2)}), pacers, 1.0)
    store.save_ledgers(marks)
    assert [f.kind for f in flags] == ["regression"] and store.ledger_marks()[KEY].halted
    acks, _, _ = settle_batch(store, stored_batch(store, [3]), {}, 2.0)
    assert acks == [], "a halted epoch is never acknowledged again"


def test_a_worker_subscribes_shared_except_to_retained_statuses() -> None:
    topics = shared_topics("edge/v1", "central")
    assert "$share/central/edge/v1/+/+/events" in topics and "$share/central/edge/v1/+/+/stats" in topics
    assert "edge/v1/+/+/status" in topics and "edge/v1/+/+/cameras/+/status" in topics


# workers against a real mosquitto ------------------------------------------------------------------------------------


def start_worker(broker: Mosquitto, db: Any, name: str, **kwargs: Any) -> Worker:
    worker = Worker("127.0.0.1", broker.port, db, worker_id=name, **kwargs)
    worker.start()
    assert worker.wait_connected(10)
    return worker


@needs_mosquitto
def test_two_workers_share_a_box_and_it_gets_every_event_acknowledged(broker: Mosquitto, tmp_path: Path) -> None:
    a = start_worker(broker, tmp_path / "central.db", "w-a", batch_wait_s=0.01)
    b = start_worker(broker, tmp_path / "central.db", "w-b", batch_wait_s=0.01)
    box = FakeBox(broker.port)
    try:
        for seq in range(1, 101):
            box.send(box.topics.events, event(seq, seq - 1 or None))
        assert wait_until(lambda: box.acked() == set(range(1, 101)), 15), sorted(set(range(1, 101)) - box.acked())
        assert a.counts().get("events", 0) > 0 and b.counts().get("events", 0) > 0, "the group split the events"
        assert a.counts()["events"] + b.counts()["events"] == 100
        rows = a.store.events(DEVICE)
        assert len(rows) == 100 and {r["deliveries"] for r in rows} == {1}
    finally:
        box.close()
        a.close()
        b.close()


@needs_mosquitto
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the worker's thread "dies"
def test_a_worker_lost_mid_batch_loses_nothing_and_stores_nothing_twice(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "central.db"
    doomed = start_worker(broker, db, "w-doomed", batch_wait_s=2.0)  # one batch takes all 20

    def die(*args: Any, **kwargs: Any) -> Any:  # the batch is stored; the worker dies before its marks and acks
        doomed._client.loop_stop()
        raise SystemExit("killed mid-batch")

    monkeypatch.setattr("edge.central.workers.settle_batch", die)
    box = FakeBox(broker.port)
    try:
        for seq in range(1, 21):
            box.send(box.topics.events, event(seq, seq - 1 or None))
        assert wait_until(lambda: len(doomed.store.events(DEVICE)) == 20, 10)
        assert box.ack_count() == 0
        monkeypatch.undo()
        sock = doomed._client.socket()
        if sock is not None:
            sock.close()  # gone without a DISCONNECT, as after SIGKILL
        heir = start_worker(broker, db, "w-heir", batch_wait_s=0.01)
        # the box sends again what no ack confirmed (redeliver_after_s); what the broker still handed to the dead
        # worker before it noticed the lost connection is lost with it, and sent again the next time
        for _ in range(5):
            for seq in range(1, 21):
                box.send(box.topics.events, event(seq, seq - 1 or None))
            if wait_until(lambda: (box.last_ack() or {}).get("up_to_seq") == 20, 3):
                break
        assert (box.last_ack() or {}).get("up_to_seq") == 20, box.last_ack()
        rows = heir.store.events(DEVICE)
        assert [r["seq"] for r in rows] == list(range(1, 21)), "each event once"
        assert heir.counts().get("events", 0) == 0 and heir.counts().get("duplicates", 0) >= 1, heir.counts()
        heir.close()
    finally:
        box.close()
        doomed.store.close()


@needs_mosquitto
def test_the_central_with_n_workers_serves_its_health_as_prometheus_metrics(broker: Mosquitto, tmp_path: Path) -> None:
    db, port = tmp_path / "central.db", free_port()
    CentralStore(db).close()
    proc = subprocess.Popen(
        [*edge_command(), "central", "run", "--host", "127.0.0.1", "--port", str(broker.port), "--db", str(db),
         "--workers", "2", "--metrics-port", str(port), "--quiet"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    box = FakeBox(broker.port)
    store = CentralStore(db)
    try:
        assert wait_until(lambda: len([w for w in fleet.workers(store) if w.alive()]) == 2, 30)
        assert wait_until(lambda: box.client.is_connected(), 5)
        for seq in range(1, 11):
            box.send(box.topics.events, event(seq, seq - 1 or None))
        box.send(box.topics.stats, stats(acked_up_to=0, last_seq=12))
        assert wait_until(lambda: box.acked() == set(range(1, 11)), 15), box.acks
        assert wait_until(lambda: bool(fleet.box_lags(store)), 5)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "edge_central_workers 2.0" in text
        labels = f'{{device="{DEVICE}",site="{SITE}"}}'
        assert f"edge_central_box_unacked_seqs{labels} 2.0" in text, text
        assert f"edge_central_box_outbox_depth{labels} 0.0" in text
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
    finally:
        box.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert fleet.workers(store) == [], "workers that stop cleanly leave the table"
    store.close()


# the fleet simulator, small -------------------------------------------------------------------------------------------
def simulate(tmp_path: Path, db: str, *extra: str) -> Dict[str, Any]:
    out = tmp_path / "result.json"
    argv = [sys.executable, str(REPO / "scripts" / "fleet_sim.py"), "--boxes", "12", "--events", "8", "--burst-s",
            "6", "--workers", "2", "--redeliver-s", "2", "--stats-s", "2", "--reconnect-max-s", "1", "--settle-s",
            "2", "--timeout-s", "120", "--folder", str(tmp_path / "sim"), "--db", db, "--json", str(out), *extra]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400, cwd=REPO)
    assert out.exists(), done.stdout + done.stderr
    result: Dict[str, Any] = json.loads(out.read_text())
    return result


def check_complete(result: Dict[str, Any], boxes: int = 12) -> None:
    assert result["missing"] == 0 and result["duplicated"] == 0 and result["foreign"] == 0, result
    assert result["unacked_at_boxes"] == 0, result
    assert result["central_events"] == result["box_events"] == boxes * (8 + 10), result


@needs_mosquitto
def test_a_small_fleet_survives_a_broker_outage_and_worker_kills_on_sqlite(tmp_path: Path) -> None:
    result = simulate(tmp_path, str(tmp_path / "central.db"), "--outage-s", "5", "--outage-events", "10",
                      "--kill-every-s", "2")  # fmt: skip
    check_complete(result)
    assert result["worker_kills"] >= 2 and result["latency_p95_s"] < 5, result


@needs_mosquitto
def test_a_small_fleet_survives_a_broker_outage_and_worker_kills_on_postgresql(
    tmp_path: Path,
    postgres: str,  # noqa: F811
) -> None:
    result = simulate(tmp_path, postgres, "--outage-s", "5", "--outage-events", "10", "--kill-every-s", "2")
    check_complete(result)
    assert result["db"] == "postgresql" and result["worker_kills"] >= 2, result


def test_health_tables_keep_the_latest_stats_and_forget_a_worker_that_left(tmp_path: Path) -> None:
    store = CentralStore(tmp_path / "central.db")
    newer, older = stats(acked_up_to=5, last_seq=9), stats(acked_up_to=1, last_seq=2)
    newer["at"], older["at"] = "2026-03-02T08:00:05+00:00", "2026-03-02T08:00:01+00:00"
    fleet.save_box_stats(store, SITE, DEVICE, newer)
    fleet.save_box_stats(store, SITE, DEVICE, older)  # arrived late through another worker: not kept
    [lag] = fleet.box_lags(store)
    assert (lag.last_seq, lag.acked_up_to, lag.central_acked_up_to) == (9, 5, 0)
    row = fleet.WorkerRow("w1", "g", "host", os.getpid(), "2026-03-02T08:00:00+00:00",
                          "2026-03-02T08:00:00+00:00", 10, 0, 1, 2.0)  # fmt: skip
    fleet.heartbeat(store, row)
    assert [w.worker_id for w in fleet.workers(store)] == ["w1"] and not fleet.workers(store)[0].alive()
    fleet.leave(store, "w1")
    assert fleet.workers(store) == []


def test_the_console_boxes_page_shows_workers_and_each_box_lag_from_the_store(tmp_path: Path) -> None:
    pytest.importorskip("starlette", reason="the console needs the central extra: pip install .[central]")
    from datetime import datetime, timezone

    from edge.central.web.context import Console
    from tests.test_console import START, client, log_in

    store = CentralStore(tmp_path / "central.db")
    try:
        console = Console(store, clock=lambda: START)
        console.users.add("sam", "staff passphrase 1", "staff", START)
        store.add_events([(SITE, event(1, None))])
        waiting = stats(acked_up_to=0, last_seq=4)
        waiting["outbox"].update(depth=3, oldest_unacked_age_s=42.0)
        fleet.save_box_stats(store, SITE, DEVICE, waiting)
        now = datetime.now(timezone.utc).isoformat()
        for name in ("w1", "w2"):
            fleet.heartbeat(store, fleet.WorkerRow(name, "g", "host", 1, now, now, 10, 0, 1, 12.5))
        web = client(console)
        log_in(web, "sam", "staff passphrase 1")
        page = web.get("/health").text
        assert "2 central workers running, 25.0 events/s" in page
        assert "3 waiting, oldest 42 s" in page and "(4 not acknowledged here)" in page
    finally:
        store.close()
