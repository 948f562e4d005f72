"""What the central knows about its fleet's health, kept in the central's store so that any process may show it: each
box's latest stats (its outbox depth, the age of its oldest unacknowledged event, its last seq and what it took as
done) and each central worker's heartbeat and counts (edge.central.workers). Own migrations ("edge.central.fleet").

A worker writes a box's stats when it receives them (through a shared subscription, any worker may) and its own row
every HEARTBEAT_S; the console's boxes page and the /metrics endpoint (edge.central.health) read them. A worker
whose heartbeat is older than STALE_AFTER_S no longer counts as running.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

from edge.central.backend import Ddl, Schema
from edge.central.store import CentralStore

migrations = Schema("edge.central.fleet")

HEARTBEAT_S = 5.0
"""How often a worker writes its row."""
STALE_AFTER_S = 3 * HEARTBEAT_S
"""A worker not heard of for this long is counted as gone."""


@migrations()
def m001_fleet(db: Ddl) -> None:
    db.execute(
        """
        CREATE TABLE box_stats (
            site TEXT NOT NULL, device_id TEXT NOT NULL, epoch TEXT NOT NULL,
            last_seq INTEGER NOT NULL, acked_up_to INTEGER NOT NULL, depth INTEGER NOT NULL,
            oldest_unacked_age_s REAL, at TEXT NOT NULL, received_at TEXT NOT NULL,
            PRIMARY KEY (site, device_id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE central_workers (
            worker_id TEXT PRIMARY KEY, share_group TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
            started_at TEXT NOT NULL, seen_at TEXT NOT NULL,
            events INTEGER NOT NULL DEFAULT 0, duplicates INTEGER NOT NULL DEFAULT 0,
            batches INTEGER NOT NULL DEFAULT 0, events_per_s REAL NOT NULL DEFAULT 0
        )
        """
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class BoxLag:
    """A box's delivery health: from its latest stats, and the central's own ack mark for its epoch."""

    site: str
    device_id: str
    epoch: str
    depth: int
    """Events the box holds that the central has not acknowledged."""
    oldest_unacked_age_s: Optional[float]
    """Age of the box's oldest unacknowledged event when it sent the stats (None: none waiting)."""
    last_seq: int
    acked_up_to: int
    central_acked_up_to: int
    """The contiguous seq the central acknowledged for that epoch (its ledger mark)."""
    stats_at: str
    received_at: str


@dataclass(frozen=True)
class WorkerRow:
    worker_id: str
    share_group: str
    host: str
    pid: int
    started_at: str
    seen_at: str
    events: int
    duplicates: int
    batches: int
    events_per_s: float

    def alive(self, now: Optional[datetime] = None) -> bool:
        seen = datetime.fromisoformat(self.seen_at)
        return (now or _now()) - seen <= timedelta(seconds=STALE_AFTER_S)


def save_box_stats(store: CentralStore, site: str, device: str, payload: Dict[str, Any]) -> None:
    """The latest stats of a box (edge.stats/1); an older message (by its `at`) does not replace a newer one."""
    outbox = payload["outbox"]
    row = [site, device, str(outbox.get("epoch") or ""), int(outbox["last_seq"]), int(outbox["acked_up_to"]),
           int(outbox["depth"]), outbox.get("oldest_unacked_age_s"), payload["at"], _now().isoformat()]  # fmt: skip
    with store.backend.transaction() as tx:
        tx.execute(
            "INSERT INTO box_stats (site, device_id, epoch, last_seq, acked_up_to, depth, oldest_unacked_age_s, at, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, device_id) DO UPDATE SET "
            "epoch = excluded.epoch, last_seq = excluded.last_seq, acked_up_to = excluded.acked_up_to, "
            "depth = excluded.depth, oldest_unacked_age_s = excluded.oldest_unacked_age_s, at = excluded.at, "
            "received_at = excluded.received_at WHERE excluded.at >= box_stats.at",
            row,
        )


def box_lags(store: CentralStore) -> List[BoxLag]:
    """Every box that sent stats, by site and device id."""
    rows = store.backend.query(
        "SELECT s.site, s.device_id, s.epoch, s.depth, s.oldest_unacked_age_s, s.last_seq, s.acked_up_to, "
        "COALESCE(l.acked_up_to, 0), s.at, s.received_at FROM box_stats s "
        "LEFT JOIN ledgers l ON l.site = s.site AND l.device_id = s.device_id AND l.epoch = s.epoch "
        "ORDER BY s.site, s.device_id"
    )
    return [BoxLag(r[0], r[1], r[2], int(r[3]), r[4], int(r[5]), int(r[6]), int(r[7]), r[8], r[9]) for r in rows]


def heartbeat(store: CentralStore, row: WorkerRow) -> None:
    with store.backend.transaction() as tx:
        tx.execute(
            "INSERT INTO central_workers (worker_id, share_group, host, pid, started_at, seen_at, events, duplicates, "
            "batches, events_per_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET "
            "seen_at = excluded.seen_at, events = excluded.events, duplicates = excluded.duplicates, "
            "batches = excluded.batches, events_per_s = excluded.events_per_s",
            [row.worker_id, row.share_group, row.host, row.pid, row.started_at, row.seen_at, row.events,
             row.duplicates, row.batches, row.events_per_s],
        )  # fmt: skip


def leave(store: CentralStore, worker_id: str) -> None:
    """A worker that stops cleanly takes its row away (a killed one goes stale)."""
    with store.backend.transaction() as tx:
        tx.execute("DELETE FROM central_workers WHERE worker_id = ?", [worker_id])


def workers(store: CentralStore) -> List[WorkerRow]:
    """Every worker row (alive or stale), the most recently started first."""
    rows = store.backend.query(
        "SELECT worker_id, share_group, host, pid, started_at, seen_at, events, duplicates, batches, events_per_s "
        "FROM central_workers ORDER BY started_at DESC"
    )
    return [WorkerRow(r[0], r[1], r[2], int(r[3]), r[4], r[5], int(r[6]), int(r[7]), int(r[8]), float(r[9]))
            for r in rows]  # fmt: skip
