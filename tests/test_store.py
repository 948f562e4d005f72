"""The event store against real SQLite files: round trips, atomic appends, seqs, restore, outbox, exports, crashes."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time as clock
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import List, Optional
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from sqlite_utils import Database

from edge.attendance import (
    AttendanceConfig,
    AttendanceEvent,
    AttendanceMachine,
    CameraRole,
    EventType,
    PersonState,
    Sighting,
)
from edge.gallery.store import Gallery, NewEmbedding
from edge.gallery.store import migrations as gallery_migrations
from edge.schedule import ScheduleConfig, SessionConfig
from edge.store import (
    EXPORT_FIELDS,
    EventContext,
    EventStore,
    StoredEvent,
    StoreError,
    event_to_dict,
    export_csv,
    export_json,
    migrations,
)

TZ = ZoneInfo("Europe/Berlin")
MONDAY = date(2024, 3, 4)
TUESDAY = date(2024, 3, 5)
DEVICE = "box-7"
CONTEXT = EventContext(gallery_version=3, model_id="sface-int8", mono_time=1234.5, wall_time=1709535600.25)
REPO = Path(__file__).resolve().parent.parent

CONFIG = AttendanceConfig(
    min_frames=3,
    cooldown_s=30,
    dedup_window_s=10,
    outing_window_s=1800,
    schedule=ScheduleConfig(
        sessions=(
            SessionConfig(name="day", start="08:00", end="16:00"),
            SessionConfig(name="3A", start="09:00", end="13:00", groups=("3A",)),
        ),
        grace_min=5,
        early_leave_tolerance_min=10,
        early_window_min=60,
    ),
)
CAMERAS = {"door-in": CameraRole.ENTRANCE, "door-out": CameraRole.EXIT}
GROUPS = {"bob": "3A"}


def at(hhmmss: str, day: date = MONDAY) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmmss), tzinfo=TZ)


def event(
    kind: EventType = EventType.ENTRY,
    person: Optional[str] = "ann",
    when: Optional[datetime] = None,
    track: str = "t1",
    **changes: object,
) -> AttendanceEvent:
    moment = when or at("08:01")
    base = AttendanceEvent(kind, person, "door-in", moment, moment, "day", track, 0.81, 0.17, 6, 0.93)
    return replace(base, **changes)  # type: ignore[arg-type]


def seen(person: Optional[str], hhmmss: str, camera: str = "door-in", day: date = MONDAY) -> Sighting:
    return Sighting(person, f"{camera}-{person}-{hhmmss}", camera, None, at(hhmmss, day), 0.8, 0.2, 6, 0.9)


def conn_epoch(path: Path) -> str:
    conn = sqlite3.connect(str(path))
    try:
        return str(conn.execute("SELECT epoch FROM epochs ORDER BY first_seq DESC LIMIT 1").fetchone()[0])
    finally:
        conn.close()


def integrity(store: EventStore) -> str:
    return str(store.db.conn.execute("PRAGMA integrity_check").fetchone()[0])


# ---------------------------------------------------------------- round trip and ids


def test_every_field_round_trips(tmp_path: Path) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    events = [
        event(EventType.ENTRY, "ann", at("08:01:02.123456"), session="day"),
        event(EventType.UNKNOWN_FACE, None, datetime(2024, 3, 4, 7, 2, 3, tzinfo=timezone.utc), "u9", session=None),
        event(EventType.EXIT, "bob", datetime(2024, 3, 4, 12, 0, tzinfo=ist), decided_at=at("12:30"), frames=0),
    ]
    with EventStore(tmp_path / "sub" / "events.db", DEVICE) as store:
        appended = store.append(events, CONTEXT)
    with EventStore(tmp_path / "sub" / "events.db", DEVICE) as store:
        read = store.events_between(at("00:00"), at("00:00", TUESDAY))
    assert read == appended
    for original, back in zip(events, read):
        assert back.event == original
        assert back.event.at.utcoffset() == original.at.utcoffset()
        assert back.event.decided_at.utcoffset() == original.decided_at.utcoffset()
        assert back.context == CONTEXT
        assert (back.published_at, back.acked_at, back.publish_attempts) == (None, None, 0)
    assert [s.seq for s in read] == [1, 2, 3]


def test_event_ids_are_device_epoch_and_ten_digit_seq(tmp_path: Path) -> None:
    with EventStore(tmp_path / "e.db", DEVICE) as store:
        stored = store.append([event(), event(track="t2")], CONTEXT)
        epoch = store.epoch
        assert len(epoch) == 16 and int(epoch, 16) >= 0
        assert [s.event_id for s in stored] == [f"box-7-{epoch}-0000000001", f"box-7-{epoch}-0000000002"]
        assert [(s.epoch, s.first_of_epoch) for s in stored] == [(epoch, True), (epoch, False)]
        assert store.events_between(at("00:00"), at("23:00")) == stored
        assert all(s.device_id == DEVICE for s in stored)
        assert store.last_seq() == 2 and store.count() == 2
        assert store.append([], CONTEXT) == []


def test_wal_full_sync_and_migrations_recorded_once(tmp_path: Path) -> None:
    for _ in range(2):
        with EventStore(tmp_path / "e.db", DEVICE) as store:
            conn = store.db.conn
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert [m.name for m in migrations.applied(store.db)] == ["m001_events", "m002_epochs", "m003_liveness"]


# ---------------------------------------------------------------- atomic appends and seqs


def test_an_invalid_event_writes_nothing(tmp_path: Path) -> None:
    with EventStore(tmp_path / "e.db", DEVICE) as store:
        store.append([event()], CONTEXT)
        bad = event(track="t2", score=math.nan)  # SQLite would store NaN as NULL: refused before writing
        with pytest.raises(ValueError, match="score"):
            store.append([event(track="t1b"), bad, event(track="t3")], CONTEXT)
        naive = event(track="t2", at=datetime(2024, 3, 4, 8, 0))
        with pytest.raises(ValueError, match="timezone-aware"):
            store.append([event(track="t1b"), naive], CONTEXT)
        assert store.count() == 1 and store.last_seq() == 1


def test_a_failure_mid_transaction_rolls_back_the_whole_step(tmp_path: Path) -> None:
    """The 2nd of 3 inserts fails inside SQLite: nothing is written and no seq is consumed (none was ever
    visible), so the next append gets the next seq after the last committed one."""
    with EventStore(tmp_path / "e.db", DEVICE) as store:
        store.append([event()], CONTEXT)
        store.db.conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.track_id = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
        )
        with pytest.raises(StoreError, match="simulated failure") as caught:
            store.append([event(track="a"), event(track="boom"), event(track="c")], CONTEXT)
        assert str(tmp_path / "e.db") in str(caught.value)
        assert store.count() == 1 and store.last_seq() == 1
        assert not store.db.conn.in_transaction
        store.db.conn.execute("DROP TRIGGER boom")
        stored = store.append([event(track="a"), event(track="b")], CONTEXT)
        assert [s.seq for s in stored] == [2, 3]
        assert integrity(store) == "ok"


def test_seq_never_repeats_after_deleting_the_last_rows(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    with EventStore(path, DEVICE) as store:
        store.append([event(track=f"t{i}") for i in range(5)], CONTEXT)
        store.db.conn.execute("DELETE FROM events WHERE seq >= 4")
    with EventStore(path, DEVICE) as store:
        assert store.last_seq() == 5 and store.count() == 3
        assert [s.seq for s in store.append([event(track="n1")], CONTEXT)] == [6]
        store.db.conn.execute("DELETE FROM events")
    with EventStore(path, DEVICE) as store:
        assert store.last_seq() == 6
        again = store.append([event(track="n2")], CONTEXT)
        assert again[0].seq == 7 and again[0].event_id == f"box-7-{store.epoch}-0000000007"


# ---------------------------------------------------------------- queries and restore


def test_events_between_filters_by_time_person_and_type(tmp_path: Path) -> None:
    with EventStore(tmp_path / "e.db", DEVICE) as store:
        store.append([event(EventType.ENTRY, "ann", at("08:00")), event(EventType.LATE, "ann", at("08:00"))], CONTEXT)
        store.append([event(EventType.ENTRY, "bob", at("09:00"))], CONTEXT)
        store.append([event(EventType.OUTING_START, "ann", at("10:00"))], CONTEXT)
        assert [s.seq for s in store.events_between(at("08:00"), at("10:00"))] == [1, 2, 3]  # end excluded
        assert [s.seq for s in store.events_between(at("08:00"), at("11:00"), person_id="ann")] == [1, 2, 4]
        only = store.events_between(at("00:00"), at("23:00"), types=[EventType.ENTRY, EventType.OUTING_START])
        assert [s.seq for s in only] == [1, 3, 4]
        utc = at("09:00").astimezone(timezone.utc)  # the same instant in another offset
        assert [s.seq for s in store.events_between(utc, utc + timedelta(seconds=1))] == [3]
        assert store.events_between(at("00:00"), at("23:00"), types=[]) == []
        with pytest.raises(ValueError, match="timezone-aware"):
            store.events_between(datetime(2024, 3, 4), at("23:00"))


def test_an_exit_decided_after_midnight_belongs_to_the_day_of_its_out_time(tmp_path: Path) -> None:
    machine = AttendanceMachine(CONFIG, CAMERAS, GROUPS)
    with EventStore(tmp_path / "e.db", DEVICE) as store:
        steps = [
            machine.step(seen("dave", "22:00:00")),
            machine.step(seen("dave", "23:50:00", camera="door-out")),
            machine.tick(at("00:00:05", TUESDAY)),
            machine.step(seen("dave", "08:03:00", day=TUESDAY)),
        ]
        for emitted in steps:
            store.append(emitted, CONTEXT)
        monday = store.events_of_day(MONDAY, TZ)
        tuesday = store.events_of_day(TUESDAY, TZ)
    assert [e.type for e in monday] == [EventType.ENTRY, EventType.OUTING_START, EventType.EXIT]
    assert monday[2].at == at("23:50:00") and monday[2].decided_at == at("00:00:00", TUESDAY)
    assert [e.type for e in tuesday] == [EventType.ENTRY]
    assert all(e.at.tzinfo is TZ for e in monday + tuesday)
    restored = AttendanceMachine(CONFIG, CAMERAS, GROUPS)
    restored.restore(monday)
    assert restored.state_of("dave") is PersonState.LEFT


def test_events_of_day_on_a_dst_fall_back_day_keeps_emission_order(tmp_path: Path) -> None:
    first = datetime(2024, 10, 27, 2, 30, tzinfo=TZ)  # CEST, +02:00
    second = datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=TZ)  # an hour later, CET, +01:00
    late = datetime(2024, 10, 27, 23, 59, tzinfo=TZ)
    with EventStore(tmp_path / "e.db", DEVICE) as store:
        store.append([event(EventType.ENTRY, "ann", first, track="a")], CONTEXT)
        store.append([event(EventType.OUTING_START, "ann", second, track="b")], CONTEXT)
        store.append([event(EventType.OUTING_END, "ann", late, track="c")], CONTEXT)
        day = store.events_of_day(date(2024, 10, 27), TZ)
        assert [e.track_id for e in day] == ["a", "b", "c"]
        assert [e.at.utcoffset() for e in day][:2] == [timedelta(hours=2), timedelta(hours=1)]
        instant = second.astimezone(timezone.utc)  # wall-clock arithmetic on TZ would drop the fold
        window = store.events_between(instant - timedelta(minutes=1), instant + timedelta(minutes=1))
        assert [s.event.track_id for s in window] == ["b"]  # by instant, not by the text of the local time


def test_restore_from_the_store_rebuilds_the_machine(tmp_path: Path) -> None:
    """A scripted morning is stored step by step; after a 'restart' a new machine restored from the store is in
    the same state and emits exactly what the original machine emits for the rest of the day."""
    path = tmp_path / "e.db"
    original = AttendanceMachine(CONFIG, CAMERAS, GROUPS)
    morning = [
        seen("ann", "08:01:00"),
        seen("bob", "09:10:00"),  # late for 3A
        seen("carol", "08:30:00"),
        seen(None, "08:40:00"),  # unknown face
        seen("ann", "10:00:00", camera="door-out"),
        seen("ann", "10:10:00"),
        seen("bob", "12:00:00", camera="door-out"),
        seen("carol", "12:20:00", camera="door-out"),
    ]
    with EventStore(path, DEVICE) as store:
        for mono, sighting in enumerate(morning):
            store.append(original.step(sighting), replace(CONTEXT, mono_time=float(mono)))
        store.append(original.tick(at("12:40:00")), replace(CONTEXT, mono_time=99.0))  # bob's exit, early
    with EventStore(path, DEVICE) as store:
        day = store.events_of_day(MONDAY, TZ)
    assert EventType.EARLY_LEAVE in {e.type for e in day} and EventType.LATE in {e.type for e in day}
    restored = AttendanceMachine(CONFIG, CAMERAS, GROUPS)
    restored.restore(day)
    for person in ("ann", "bob", "carol", "nobody"):
        assert restored.state_of(person) is original.state_of(person), person
    assert restored.state_of("carol") is PersonState.OUTING
    afternoon = [seen("ann", "13:00:00"), seen(None, "13:05:00"), seen("bob", "14:00:00")]
    for sighting in afternoon:
        assert restored.step(sighting) == original.step(sighting)
    assert restored.tick(at("16:30:00")) == original.tick(at("16:30:00"))


# ---------------------------------------------------------------- gallery in the same file


def _embedding(seed: int) -> NewEmbedding:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return NewEmbedding(v / np.linalg.norm(v), "sface-int8", 0.8, f"photo:{seed}.jpg")


@pytest.mark.parametrize("gallery_first", [True, False])
def test_gallery_and_events_share_one_file(tmp_path: Path, gallery_first: bool) -> None:
    path = tmp_path / "edge.db"
    if gallery_first:
        with Gallery(path) as gallery:
            gallery.put_person("ann", "Ann", [_embedding(1)])
    with EventStore(path, DEVICE) as store, Gallery(path) as gallery:
        version = gallery.put_person("bob", "Bob", [_embedding(2)])
        store.append([event()], replace(CONTEXT, gallery_version=version))
        gallery.put_person("carol", "Carol", [_embedding(3)])
    with EventStore(path, DEVICE) as store, Gallery(path) as gallery:
        assert [m.name for m in migrations.applied(store.db)] == ["m001_events", "m002_epochs", "m003_liveness"]
        assert [m.name for m in gallery_migrations.applied(gallery.db)] == ["m001_gallery"]
        sets = store.db.conn.execute("SELECT DISTINCT migration_set FROM _sqlite_migrations").fetchall()
        assert sorted(r[0] for r in sets) == ["edge.events", "edge.gallery.store"]
        assert store.count() == 1 and store.events_between(at("00:00"), at("23:00"))[0].context.gallery_version
        assert [p.person_id for p in gallery.people()] == (["ann"] if gallery_first else []) + ["bob", "carol"]
        assert integrity(store) == "ok"


# ---------------------------------------------------------------- the outbox


def test_outbox_pending_publish_and_ack(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    sent = at("09:00")
    with EventStore(path, DEVICE) as store:
        assert store.oldest_unacked() is None
        store.append([event(track=f"t{i}") for i in range(5)], CONTEXT)
        assert [s.seq for s in store.pending(10)] == [1, 2, 3, 4, 5]
        assert [s.seq for s in store.pending(2)] == [1, 2]
        assert store.mark_published([1, 2, 3], sent) == 3
        assert store.mark_published([3, 99], sent + timedelta(seconds=5)) == 1
        assert store.ack_up_to(2, sent + timedelta(seconds=1)) == 2
        assert store.ack_up_to(2, sent + timedelta(seconds=9)) == 0
        with pytest.raises(ValueError):
            store.pending(0)
    with EventStore(path, DEVICE) as store:
        waiting = store.pending(10)
        assert [s.seq for s in waiting] == [3, 4, 5]
        assert (waiting[0].publish_attempts, waiting[0].published_at) == (2, sent + timedelta(seconds=5))
        assert (waiting[1].publish_attempts, waiting[1].published_at) == (0, None)
        acked = store.events_between(at("00:00"), at("23:00"))[0]
        assert acked.acked_at == sent + timedelta(seconds=1) and acked.publish_attempts == 1
        oldest = store.oldest_unacked()
        assert oldest is not None and oldest.seq == 3
        assert store.ack_up_to(10, sent) == 3
        assert store.oldest_unacked() is None and store.pending(10) == []


# ---------------------------------------------------------------- exports


def _sample(tmp_path: Path) -> List[StoredEvent]:
    with EventStore(tmp_path / "e.db", DEVICE) as store:
        store.append([event(), event(EventType.LATE)], CONTEXT)
        store.append([event(EventType.UNKNOWN_FACE, None, at("08:02"), "u1", session=None)], CONTEXT)
        return store.events_between(at("00:00"), at("23:00"))


def test_csv_export_parses_back(tmp_path: Path) -> None:
    stored = _sample(tmp_path)
    out = io.StringIO(newline="")
    assert export_csv(stored, out) == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert list(rows[0]) == list(EXPORT_FIELDS)
    for row, s in zip(rows, stored):
        assert row["event_id"] == s.event_id and int(row["seq"]) == s.seq and row["type"] == s.event.type.value
        assert datetime.fromisoformat(row["at"]) == s.event.at
        assert datetime.fromisoformat(row["decided_at"]) == s.event.decided_at
        assert datetime.fromisoformat(row["stored_at"]).timestamp() == pytest.approx(s.context.wall_time)
        assert float(row["score"]) == s.event.score and int(row["frames"]) == s.event.frames
        assert int(row["gallery_version"]) == s.context.gallery_version
    assert rows[2]["person_id"] == "" and rows[2]["session"] == ""


def test_json_lines_export_parses_back(tmp_path: Path) -> None:
    stored = _sample(tmp_path)
    out = io.StringIO()
    assert export_json(stored, out) == 3
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert records == [event_to_dict(s) for s in stored]
    assert records[2]["person_id"] is None and list(records[0]) == list(EXPORT_FIELDS)
    assert datetime.fromisoformat(records[0]["at"]) == stored[0].event.at


# ---------------------------------------------------------------- errors


def test_a_file_that_is_not_sqlite_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(StoreError, match="cannot open the event store") as caught:
        EventStore(path, DEVICE)
    assert str(path) in str(caught.value)


def test_an_unusable_folder_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the event store or its folder") as caught:
        EventStore(blocker / "events.db", DEVICE)
    assert str(blocker / "events.db") in str(caught.value)
    with pytest.raises(StoreError, match="cannot open"):
        EventStore(tmp_path, DEVICE)  # a folder, not a file


@pytest.mark.parametrize("bad", ["", "box/1", "-box", "box 1", "x" * 65])
def test_a_bad_device_id_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(StoreError, match="invalid device id"):
        EventStore(tmp_path / "e.db", bad)


def test_a_full_disk_refuses_the_step_and_keeps_the_store_usable(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    with EventStore(path, DEVICE) as store:
        store.append([event(track="first")], CONTEXT)
        conn = store.db.conn
        size = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {size + 1}")  # SQLite's own "disk" is now nearly full
        group = 0
        with pytest.raises(StoreError, match="disk full") as caught:
            for group in range(1000):
                store.append([event(track=f"g{group}-{k}") for k in range(3)], CONTEXT)
        assert str(path) in str(caught.value)
        assert group > 0 and store.count() == 1 + 3 * group  # the failed step left nothing behind
        assert store.last_seq() == store.count() and integrity(store) == "ok"
        conn.execute("PRAGMA max_page_count = 1073741823")  # space was freed
        retried = store.append([event(track=f"g{group}-{k}") for k in range(3)], CONTEXT)
        assert [s.seq for s in retried] == [2 + 3 * group, 3 + 3 * group, 4 + 3 * group]
    with EventStore(path, DEVICE) as store:
        assert store.count() == 4 + 3 * group and integrity(store) == "ok"


# ---------------------------------------------------------------- crashes


def test_sigkill_at_random_moments_never_leaves_half_a_step(tmp_path: Path) -> None:
    """A writer process appending 3-event steps in a loop is killed 5 times at random moments, then checked."""
    path = tmp_path / "crash.db"
    rng = random.Random()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    high_water = 0
    for run in range(5):
        writer = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "crash_writer.py"), str(path), f"r{run}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        try:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "ready", writer.stderr
            clock.sleep(rng.uniform(0.05, 0.3))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=10)
        assert writer.returncode == -signal.SIGKILL
        with EventStore(path, "crash-box") as store:
            run_seqs = [
                s.seq
                for s in store.events_between(at("00:00"), at("00:00", TUESDAY))
                if s.event.track_id.startswith(f"r{run}-")
            ]
            assert run_seqs and min(run_seqs) > high_water  # a restarted writer never reuses a seq
            high_water = store.last_seq()
    conn = sqlite3.connect(str(path))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT seq, event_id, track_id, mono_time FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()
    seqs = [r[0] for r in rows]
    assert seqs == sorted(set(seqs)) and len(seqs) > 15
    assert len({r[1] for r in rows}) == len(rows)
    epoch = conn_epoch(path)
    assert all(r[1] == f"crash-box-{epoch}-{r[0]:010d}" for r in rows)
    groups = Counter(r[2] for r in rows)
    assert set(groups.values()) == {3}, [g for g, n in groups.items() if n != 3]
    for track in groups:
        members = [r[0] for r in rows if r[2] == track]
        assert members == list(range(members[0], members[0] + 3))  # one step = consecutive seqs
    monos = [r[3] for r in rows]
    assert monos == sorted(monos)  # seqs follow commit order across processes


# ---------------------------------------------------------------- start-up checks (issue 7)


def _store_with_events(path: Path, n: int, published: bool = True) -> str:
    with EventStore(path, DEVICE) as store:
        store.append([event(track=f"t{i}") for i in range(n)], CONTEXT)
        if published:
            store.reserve_published(n)
            return store.epoch
    return ""


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_database_the_box_had_is_refused_when_missing_or_empty_unless_init(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "edge.db"
    old_epoch = _store_with_events(path, 3)
    marker = json.loads((tmp_path / "edge.db.id").read_text())
    assert marker["epoch"] == old_epoch and marker["device_id"] == DEVICE and marker["hwm"] == 3
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if damage == "empty":
        path.write_bytes(b"")
    with pytest.raises(StoreError, match=r"--init") as caught:
        EventStore(path, DEVICE)
    assert str(path) in str(caught.value) and damage in str(caught.value)
    assert not path.exists() or path.stat().st_size == 0  # nothing was created in its place
    with EventStore(path, DEVICE, init=True) as store:
        new = store.append([event()], CONTEXT)
        assert store.epoch != old_epoch and new[0].seq == 1 and new[0].first_of_epoch
        assert new[0].event_id == f"{DEVICE}-{store.epoch}-0000000001"  # never the lost database's id
    assert json.loads((tmp_path / "edge.db.id").read_text())["epoch"] != old_epoch
    with EventStore(path, DEVICE) as store:  # the new database is accepted from now on
        assert store.count() == 1


def test_a_database_recreated_by_another_command_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    _store_with_events(path, 2)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    Gallery(path).close()  # e.g. `edge gallery list` after the card was wiped: SQLite creates a new file
    with pytest.raises(StoreError, match="replaced by a new one"):
        EventStore(path, DEVICE)


def test_an_old_database_without_a_marker_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    _store_with_events(path, 2)
    (tmp_path / "edge.db.id").unlink()  # a database from before markers (or a crash before the marker was written)
    with EventStore(path, DEVICE) as store:
        assert store.count() == 2
    assert json.loads((tmp_path / "edge.db.id").read_text())["hwm"] == 2


def test_a_lost_wal_is_detected_and_init_rotates_the_epoch(tmp_path: Path) -> None:
    """The database file comes back without its last committed rows (as after a lost or damaged WAL): their seqs
    would be handed out again, so start-up refuses; --init gives the seqs from there on a new epoch."""
    path = tmp_path / "edge.db"
    with EventStore(path, DEVICE) as store:
        store.append([event(track=f"a{i}") for i in range(5)], CONTEXT)
        first_epoch = store.epoch
    backup = (tmp_path / "edge.db").read_bytes()  # checkpointed at close: 5 events
    with EventStore(path, DEVICE) as store:
        store.append([event(track=f"b{i}") for i in range(5)], CONTEXT)
        store.reserve_published(10)  # seqs 6..10 went out
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(backup)
    with pytest.raises(StoreError, match=r"lost committed events: its last seq is 5, below 10.*--init"):
        EventStore(path, DEVICE)
    with EventStore(path, DEVICE, init=True) as store:
        assert store.epoch != first_epoch and store.epoch_span(first_epoch) == (1, 5)
        again = store.append([event(track="c")], CONTEXT)
        assert again[0].seq == 6 and again[0].first_of_epoch
        assert again[0].event_id == f"{DEVICE}-{store.epoch}-0000000006"
        old = store.events_between(at("00:00"), at("23:00"))[:5]
        assert all(s.epoch == first_epoch and s.event_id.startswith(f"{DEVICE}-{first_epoch}-") for s in old)
    with EventStore(path, DEVICE) as store:  # settled: the marker follows the new epoch
        assert store.last_seq() == 6


def test_the_marker_hwm_is_raised_before_a_seq_is_published_and_rarely(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    with EventStore(path, DEVICE) as store:
        store.append([event(track=f"t{i}") for i in range(50)], CONTEXT)
        marker = tmp_path / "edge.db.id"
        assert json.loads(marker.read_text())["hwm"] == 0
        store.reserve_published(1)
        assert json.loads(marker.read_text())["hwm"] == 50  # the whole high water at once
        written = marker.stat().st_mtime_ns
        for seq in range(2, 51):
            store.reserve_published(seq)
        assert marker.stat().st_mtime_ns == written


def test_a_database_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    _store_with_events(path, 1, published=False)
    conn = sqlite3.connect(str(path))
    with conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('edge.events', 'm007_x', 'now')"
        )
    conn.close()
    with pytest.raises(StoreError, match=r"written by a newer edge \(unknown migrations: m007_x\)"):
        EventStore(path, DEVICE)


def _read_only(path: Path) -> None:
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here (root ignores file modes)")
    else:
        path.chmod(0o444)


def _writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    else:
        path.chmod(0o644)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_database_or_folder_is_refused_at_open(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "var"
    path = folder / "edge.db"
    _store_with_events(path, 2, published=False)
    target = path if what == "file" else folder
    _read_only(target)
    try:
        with pytest.raises(StoreError, match="read-only") as caught:
            EventStore(path, DEVICE)
        assert str(path) in str(caught.value)
    finally:
        _writable(target)


def test_opening_while_another_process_creates_the_database_waits_for_it(tmp_path: Path) -> None:
    """Two processes creating a fresh database at once: the second finds the file in the first's creating
    transaction (rollback journal, not yet WAL). Switching to WAL then fails at once with "database is locked"
    (SQLite's busy handler does not cover it): the open must wait and succeed, not exit."""
    path = tmp_path / "fresh.db"
    other = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE being_created (x)")
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    try:
        started = clock.monotonic()
        with EventStore(path, DEVICE) as store:
            assert store.last_seq() == 0 and clock.monotonic() - started >= 0.4
    finally:
        release.join()
        other.close()
    code = "import sys\nfrom edge.store import EventStore\nEventStore(sys.argv[1], 'box-7').close()\n"
    fresh = tmp_path / "second.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(fresh)], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]  # fmt: skip
    errors = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    with EventStore(fresh, DEVICE) as store:
        assert json.loads(Path(f"{fresh}.id").read_text())["epoch"] == store.epoch


def test_events_stored_before_epochs_get_ids_with_the_epoch(tmp_path: Path) -> None:
    """A database of the previous version (events only, ids without an epoch) is migrated: every id gets the epoch,
    so the central server can check every event_id's form."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(str(path), isolation_level=None)
    db = Database(conn)
    migrations.apply(db, stop_before="m002_epochs")
    conn.execute(
        "INSERT INTO events (seq, event_id, device_id, type, camera_id, at, at_utc, decided_at, wall_time, mono_time, "
        "track_id, score, margin, frames, quality, gallery_version, model_id) VALUES (1, 'box-7-0000000001', 'box-7', "
        "'entry', 'door-in', '2024-03-04T08:01:00+01:00', '2024-03-04T07:01:00.000000Z', '2024-03-04T08:01:00+01:00', "
        "1.0, 1.0, 't1', 0.8, 0.2, 5, 0.9, 3, 'sface-int8')"
    )
    conn.close()
    with EventStore(path, DEVICE) as store:
        old = store.events_between(at("00:00"), at("23:00"))
        assert [(s.event_id, s.epoch, s.first_of_epoch) for s in old] == [
            (f"box-7-{store.epoch}-0000000001", store.epoch, True)
        ]
        assert store.append([event(track="t2")], CONTEXT)[0].event_id == f"box-7-{store.epoch}-0000000002"
