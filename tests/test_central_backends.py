"""The central's store on both back-ends (issue 13): every test runs on a SQLite file and on a real PostgreSQL that
the tests start (tests/pg.py; the PostgreSQL half skips, saying why, without Debian's postgresql package). Events are
stored once whoever stores them, the ack state of a box comes from what is stored (two workers compute the same
ack), marks only rise, and every part (office, users, crops, mail, console records) keeps its tables the same way."""

from __future__ import annotations

import base64
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from pg import postgres, postgres_server  # noqa: F401

from edge.central.backend import Schema, open_backend
from edge.central.backend.pg import redact, to_pg_ddl, to_psycopg
from edge.central.crops import CentralCrops, CropRules
from edge.central.ledger import Marks
from edge.central.mail import already_sent
from edge.central.office import Office, Person
from edge.central.store import CentralError, CentralStore, migrations
from edge.central.timetable import load_timetable
from edge.central.users import Users
from edge.central.web.records import Push, Records
from edge.cli import main

KST = timezone(timedelta(hours=9))
DAY = date(2025, 3, 4)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a central store lives: a SQLite file, or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "central.db")
    return str(request.getfixturevalue("postgres"))


@pytest.fixture
def store(target: str) -> Iterator[CentralStore]:
    store = CentralStore(target)
    try:
        yield store
    finally:
        store.close()


def event(seq: int, prev: Optional[int] = None, epoch: str = "e1", device: str = "box-1", **facts: Any) -> Dict[str, Any]:
    at = datetime(2025, 3, 4, 9, 0, tzinfo=KST) + timedelta(seconds=seq % 86400)
    body = {"event_id": f"{device}-{epoch}-{seq}", "epoch": epoch, "seq": seq, "prev_seq": prev, "device_id": device,
            "site": "s", "type": "entry", "person_id": "lin", "camera_id": "door", "at": at.isoformat()}  # fmt: skip
    body.update(facts)
    return body


# events ------------------------------------------------------------------------------------------------------------
def test_an_event_is_stored_once_and_redeliveries_are_counted(store: CentralStore) -> None:
    assert store.add_event("s", event(1)).new
    again = store.add_event("s", event(1))
    assert (again.new, again.deliveries, again.conflict) == (False, 2, False)
    reused = store.add_event("s", event(1, person_id="ana"))  # same id, other facts: the seq is being reused
    assert (reused.new, reused.deliveries, reused.conflict) == (False, 3, True)
    [row] = store.events()
    assert row["deliveries"] == 3 and row["payload"]["person_id"] == "lin"  # the first facts stay


def test_a_batch_is_one_transaction_and_big_seqs_fit(store: CentralStore) -> None:
    big = 2**53 - 1  # the largest seq the schemas allow: 64-bit on both back-ends
    results = store.add_events([("s", event(1)), ("s", event(2, 1)), ("s", event(1)), ("s", event(big, 2))])
    assert [r.new for r in results] == [True, True, False, True]
    assert store.seqs_above("s", "box-1", "e1", 1) == [(2, 1), (big, 2)]
    with pytest.raises(KeyError):  # a bad payload in the middle: nothing of the batch is kept
        store.add_events([("s", event(3, 2)), ("s", {"event_id": "x"})])
    assert [e["seq"] for e in store.events()] == [1, 2, big]


def test_events_by_box_epoch_first_seen_and_by_time(store: CentralStore) -> None:
    store.save_ledgers([(("s", "box-1", "e2"), Marks())])
    store.save_ledgers([(("s", "box-1", "e1"), Marks())])  # e1 first seen after e2
    store.add_events([("s", event(1, epoch="e1")), ("s", event(1, epoch="e2")), ("s", event(2, 1, epoch="e2")),
                      ("s", event(5, device="box-0", type="exit"))])  # fmt: skip
    assert [(e["device_id"], e["epoch"], e["seq"]) for e in store.events()] == [
        ("box-0", "e1", 5), ("box-1", "e2", 1), ("box-1", "e2", 2), ("box-1", "e1", 1)
    ]  # fmt: skip
    assert [e["event_id"] for e in store.events(device="box-0", site="s")] == ["box-0-e1-5"]
    assert store.epochs("s", "box-1") == ["e1", "e2"]
    since, until = "2025-03-04T09:00:01.5", "2025-03-04T09:00:06"
    assert [e["seq"] for e in store.events_between(since, until)] == [2, 5]  # `at` compares as text, byte-wise
    assert [e["seq"] for e in store.events_between(since, "2025-03-05", types=("exit",))] == [5]


# ack state from the store ------------------------------------------------------------------------------------------
def test_marks_only_rise_and_a_halt_stays(store: CentralStore) -> None:
    key = ("s", "box-1", "e1")
    store.save_ledgers([(key, Marks(floor=5, acked_up_to=7, stored_up_to=7, reported=9))])
    store.save_ledgers([(key, Marks(floor=3, acked_up_to=8, stored_up_to=2, halted="seqs went back", reported=4))])
    store.save_ledgers([(key, Marks(halted="another reason"))], durable=True)
    assert store.ledger_marks() == {key: Marks(5, 8, 7, "seqs went back", 9)}
    assert store.ledger_marks([key, ("s", "box-9", "e1")]) == {key: Marks(5, 8, 7, "seqs went back", 9)}


def test_two_workers_ack_the_same_from_what_is_stored(target: str) -> None:
    """Each worker stores some of a box's events; either one's ack covers all of them, from the store alone."""
    one, two = CentralStore(target), CentralStore(target)
    try:
        key = ("s", "box-1", "e1")
        one.add_events([("s", event(1)), ("s", event(2, 1)), ("s", event(5, 2))])  # 3, 4 never used: prev_seq 2
        two.add_events([("s", event(6, 5)), ("s", event(9, 8))])  # 7, 8 not here yet
        ledger = two.stored_ledger(*key)
        assert ledger.ack("e1") == {"schema": "edge.ack/1", "epoch": "e1", "up_to_seq": 6, "seqs": [9]}
        two.save_ledgers([(key, ledger.marks())], durable=True)
        one.add_events([("s", event(8, 6))])
        assert one.stored_ledger(*key).ack("e1") == {"schema": "edge.ack/1", "epoch": "e1", "up_to_seq": 9}
        assert one.ledger_marks()[key].stored_up_to == 6  # saved by the other worker
    finally:
        one.close()
        two.close()


def test_workers_storing_the_same_events_at_once_store_each_once(target: str) -> None:
    stores = [CentralStore(target) for _ in range(3)]
    errors: List[BaseException] = []

    def work(store: CentralStore, start: int) -> None:
        try:
            for first in range(start, 200, 10):  # overlapping batches: every event is sent by every worker
                store.add_events([("s", event(seq, seq - 1 or None)) for seq in range(first + 1, first + 21)])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, i * 3)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors
        rows = stores[0].events()
        assert sorted(e["seq"] for e in rows) == list(range(1, 217))
        assert stores[1].stored_ledger("s", "box-1", "e1").up_to == 216
    finally:
        for store in stores:
            store.close()


# flags, statuses, results ------------------------------------------------------------------------------------------
def test_flags_statuses_and_results(store: CentralStore) -> None:
    store.add_flag("s", "box-1", "e2", "new_epoch", "its event database was started again")
    assert [(f["kind"], f["epoch"]) for f in store.flags()] == [("new_epoch", "e2")]
    status = {"state": "online", "at": "2025-03-04T09:00:00+09:00", "reason": ""}
    store.put_status("s", "box-1", None, status)
    store.put_status("s", "box-1", None, {**status, "state": "offline"})
    store.put_status("s", "box-1", "door", {**status, "state": "stalled"})
    assert store.status("s", "box-1")["state"] == "offline"  # type: ignore[index]
    assert store.status("s", "box-1", "door")["state"] == "stalled"  # type: ignore[index]
    store.put_status("s", "box-1", "door", None)
    assert store.status("s", "box-1", "door") is None
    store.add_result("s", "box-1", {"request_id": "r1", "status": "ok"})
    assert store.backend.query("SELECT request_id, status FROM gallery_results") == [("r1", "ok")]


# migrations --------------------------------------------------------------------------------------------------------
def test_migrations_are_applied_once_even_when_workers_start_together(target: str) -> None:
    opened: List[CentralStore] = []
    errors: List[BaseException] = []

    def start() -> None:
        try:
            opened.append(CentralStore(target))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors and len(opened) == 4
        assert opened[0].backend.applied(migrations) == ["m001_central", "m002_epochs"]
        extra = Schema("edge.test.extra")

        @extra()
        def m001_extra(db: Any) -> None:
            db.execute("CREATE TABLE extra (id INTEGER PRIMARY KEY, blob BLOB, note TEXT NOT NULL)")

        for store in opened:
            store.backend.apply(extra)
        with opened[1].backend.transaction() as tx:
            new_id = tx.insert("INSERT INTO extra (blob, note) VALUES (?, ?)", [b"\x00\xff", "100% sure?"])
        assert opened[2].backend.query("SELECT id, blob, note FROM extra") == [(new_id, b"\x00\xff", "100% sure?")]
    finally:
        for store in opened:
            store.close()


def test_a_nested_transaction_is_part_of_the_outer_one(store: CentralStore) -> None:
    with pytest.raises(RuntimeError), store.backend.transaction() as tx:
        tx.execute("INSERT INTO flags (site, device_id, epoch, kind, detail, at) VALUES ('s', 'b', 'e', 'k', 'd', 't')")
        store.add_flag("s", "box-1", "e1", "resend", "inner")
        raise RuntimeError("undo both")
    assert store.flags() == []


# the parts ---------------------------------------------------------------------------------------------------------
def test_office_roster_timetable_corrections_and_report(store: CentralStore) -> None:
    office = Office(store)
    office.put_timetable(load_timetable('timezone: Asia/Seoul\nsessions:\n  - {name: morning, start: "09:00", '
                                        'end: "12:00"}\n', "t.yml"))  # fmt: skip
    office.put_person(Person("lin", "Lin-Manuel", "3A"))
    office.put_person(Person("ana", "Ana"))
    office.put_person(Person("lin", "Lin-Manuel Miranda", "3A"))
    office.set_active("ana", True)
    assert [p.person_id for p in office.people()] == ["ana", "lin"]  # no group sorts first on both
    first = office.correct(DAY, "ana", "excused", "office", "doctor's note")
    second = office.correct(DAY, "lin", "manual_exit", "office", "forgot", at=datetime(2025, 3, 4, 11, 0))
    assert (first.id, second.id) == (1, 2)
    assert [c.kind for c in office.corrections(DAY)] == ["excused", "manual_exit"]
    store.add_event("s", event(1))  # Lin-Manuel at 09:00:01
    rows = {r.person_id: r.status for r in office.report(DAY)}
    assert rows == {"ana": "excused", "lin": "left_early"}  # in at 09:00:01, out at 11:00 by hand


def test_users_and_sessions(store: CentralStore) -> None:
    users = Users(store.backend)
    now = datetime(2025, 3, 4, 9, 0, tzinfo=timezone.utc)
    users.add("kim", "a long passphrase", "admin", now)
    assert users.check_password("kim", "a long passphrase") is not None
    assert users.check_password("kim", "wrong passphrase") is None
    session = users.open_session(users.all()[0], now)
    assert users.session(session.token, now + timedelta(minutes=5)) is not None
    users.set_password("kim", "another passphrase", now)
    assert users.session(session.token, now + timedelta(minutes=6)) is None  # a new password ends every session


def test_console_records(store: CentralStore) -> None:
    records = Records(store.backend)
    now = datetime(2025, 3, 4, 9, 0, tzinfo=timezone.utc)
    for i in range(10):
        records.add_photo("lin", bytes([i, 0, 255]), "upload", "kim", now)
    assert records.photos("lin") == [bytes([i, 0, 255]) for i in range(2, 10)]  # the newest 8, as bytes
    assert records.photo_counts() == {"lin": 8}
    records.review("box-1-e1-1", "lin", "labelled", "kim", now)
    records.review("box-1-e1-1", "ana", "enrolled", "kim", now)
    assert records.reviews(["box-1-e1-1", "nope"])["box-1-e1-1"].person_id == "ana"
    for op in ("upsert", "remove"):
        records.add_push(Push("lin", op, "s", "box-1", "ok", "", "kim", now.isoformat()))
    assert [p.op for p in records.last_pushes("lin", limit=1)] == ["remove"]


def test_crops(store: CentralStore, tmp_path: Path) -> None:
    noise = np.random.default_rng(7).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", noise)
    assert ok
    payload = {"event_id": "box-1-e1-1", "event_type": "unknown_face", "at": "2025-03-04T09:00:00+09:00",
               "jpeg": base64.b64encode(jpeg.tobytes()).decode()}  # fmt: skip
    crops = CentralCrops(store, CropRules(folder=tmp_path / "crops", max_bytes=len(jpeg), max_total_bytes=len(jpeg) * 2))
    crops.add("s", "box-1", payload)
    crops.add("s", "box-1", payload)  # sent again: replaces the first
    crops.add("s", "box-1", {**payload, "event_id": "box-1-e1-2"})
    crops.add("s", "box-1", {**payload, "event_id": "box-1-e1-3"})  # over the total: the oldest goes
    start = datetime(2025, 3, 4, tzinfo=KST)
    assert [c.event_id for c in crops.between(start, start + timedelta(days=1))] == ["box-1-e1-2", "box-1-e1-3"]
    assert crops.total_bytes() == 2 * len(jpeg) and crops.read("box-1-e1-3") == jpeg.tobytes()


def test_mail_sent_is_recorded_once_per_day_and_group(store: CentralStore) -> None:
    from edge.central.mail import migrations as mail_migrations

    store.backend.apply(mail_migrations)
    assert already_sent(store, DAY) == {}
    for message_id in ("<1@x>", "<2@x>"):
        with store.backend.transaction() as tx:
            tx.execute(
                "INSERT INTO mail_sent (day, recipient_group, recipients, format, rows, message_id, sent_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, recipient_group) DO UPDATE SET "
                "message_id = excluded.message_id",
                [DAY.isoformat(), "3A", "a@x", "csv", 3, message_id, "now"],
            )
    assert already_sent(store, DAY) == {"3A": "<2@x>"}


def test_office_commands_take_a_postgresql_url(target: str) -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["central", "people", "add", "--db", target, "lin", "Lin-Manuel", "--group", "3A"])
    assert out.exit_code == 0, out.output
    store = CentralStore(target)
    try:
        assert Office(store).person("lin") == Person("lin", "Lin-Manuel", "3A")
    finally:
        store.close()


# the adapter -------------------------------------------------------------------------------------------------------
def test_portable_sql_and_table_definitions_for_postgresql() -> None:
    assert to_psycopg("SELECT a FROM t WHERE b LIKE '%x' AND c = ?") == "SELECT a FROM t WHERE b LIKE '%%x' AND c = %s"
    assert to_pg_ddl("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, s TEXT, b BLOB)") == (
        'CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT NOT NULL, s TEXT COLLATE "C", '
        "b BYTEA)"
    )
    assert redact("postgresql://edge:s3cret@db.example:5432/edge") == "postgresql://edge:***@db.example:5432/edge"


def test_an_unreachable_postgresql_is_one_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://nobody:pw@/edge?host={tmp_path}&port=1&connect_timeout=1"
    with pytest.raises(CentralError, match=r"postgresql://nobody:\*\*\*@.*cannot connect to PostgreSQL"):
        CentralStore(url)


def test_a_sqlite_store_is_the_default(tmp_path: Path) -> None:
    backend = open_backend(tmp_path / "central.db")
    try:
        assert backend.kind == "sqlite" and (tmp_path / "central.db").exists()
    finally:
        backend.close()
