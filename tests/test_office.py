"""The office's data at the central (issue 12): roster, timetable, corrections, the events' names and groups, the
report's exports and the `edge central people|timetable|correct|report` commands, on a real central SQLite file."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from edge.central.export import COLUMNS, ExportError, write
from edge.central.office import Office, OfficeError, Person
from edge.central.store import CentralStore
from edge.central.timetable import Timetable, load_timetable
from edge.cli import main
from edge.errors import ConfigError

KST = timezone(timedelta(hours=9))
DAY = date(2025, 3, 4)  # a Tuesday
TIMETABLE = 'timezone: Asia/Seoul\nsessions:\n  - {name: morning, start: "09:00", end: "12:00"}\n'


def _event(seq: int, person: str, kind: str, clock: str) -> Dict[str, Any]:
    at = datetime.combine(DAY, datetime.strptime(clock, "%H:%M").time(), tzinfo=KST)
    return {"event_id": f"box-1-e1-{seq}", "epoch": "e1", "seq": seq, "prev_seq": None, "device_id": "box-1",
            "site": "s", "type": kind, "person_id": person, "camera_id": "door", "at": at.isoformat()}  # fmt: skip


@pytest.fixture
def office(tmp_path: Path) -> Office:
    office = Office(CentralStore(tmp_path / "central.db"))
    office.put_timetable(load_timetable(TIMETABLE, "t.yml"))
    office.put_person(Person("lin", "Lin-Manuel", "3A"))
    office.put_person(Person("ana", "Ana"))
    return office


def test_roster_round_trip_and_reopen(office: Office, tmp_path: Path) -> None:
    office.put_person(Person("lin", "Lin-Manuel Miranda", "3B"))
    office.set_active("ana", False)
    assert office.person("lin") == Person("lin", "Lin-Manuel Miranda", "3B", True)
    office.store.close()
    again = Office(CentralStore(tmp_path / "central.db"))  # migrations are applied once and recorded
    assert again.people() == [Person("ana", "Ana", None, False), Person("lin", "Lin-Manuel Miranda", "3B", True)]
    assert again.timetable().timezone == "Asia/Seoul"
    with pytest.raises(OfficeError, match="no person 'zed'"):
        again.set_active("zed", True)
    with pytest.raises(ValueError, match="invalid person id"):
        Person("bad id", "x")


def test_the_central_store_applies_every_parts_migrations(tmp_path: Path) -> None:
    store = CentralStore(tmp_path / "central.db")
    applied = {row["migration_set"] for row in store.db["_sqlite_migrations"].rows}
    assert {"edge.central", "edge.central.office"} <= applied


def test_events_get_name_and_group(office: Office) -> None:
    assert office.named({"person_id": "lin", "type": "entry"})["name"] == "Lin-Manuel"
    assert office.named({"person_id": "lin"})["group"] == "3A"
    assert office.named({"person_id": None, "type": "unknown_face"})["name"] is None


def test_corrections_are_checked(office: Office) -> None:
    with pytest.raises(OfficeError, match="needs the time"):
        office.correct(DAY, "lin", "manual_entry", "office", "camera down")
    with pytest.raises(OfficeError, match="why"):
        office.correct(DAY, "lin", "excused", "office", " ")
    with pytest.raises(OfficeError, match="kind must be one of"):
        office.correct(DAY, "lin", "deleted", "office", "no")
    with pytest.raises(OfficeError, match="is not on 2025-03-04"):
        office.correct(DAY, "lin", "manual_exit", "office", "x", at=datetime(2025, 3, 5, 9, 0))
    with pytest.raises(OfficeError, match="no person 'zed'"):
        office.correct(DAY, "zed", "excused", "office", "x")
    fix = office.correct(DAY, "lin", "manual_exit", "office", "forgot", at=datetime(2025, 3, 4, 11, 0))
    assert fix.at == datetime(2025, 3, 4, 11, 0, tzinfo=KST) and fix.id == 1


def test_timetable_files_are_checked_with_the_key_path() -> None:
    with pytest.raises(ConfigError, match=r"sessions\[0\]\.end \(line 3\): must be after start"):
        load_timetable('timezone: Asia/Seoul\nsessions:\n  - {name: a, start: "09:00", end: "08:00"}\n', "t.yml")
    with pytest.raises(ConfigError, match="IANA zone"):
        load_timetable("timezone: Mars/Olympus\n", "t.yml")
    assert load_timetable('{"timezone": "UTC", "grace_min": 3}', "t.json") == Timetable(
        load_timetable("grace_min: 3\n", "x").schedule, "UTC"
    )


def test_exports_carry_the_same_rows(office: Office) -> None:
    for seq, (who, kind, clock) in enumerate([("lin", "entry", "09:12"), ("lin", "outing_start", "10:00"),
                                              ("lin", "outing_end", "10:30")], start=1):  # fmt: skip
        office.store.add_event("s", _event(seq, who, kind, clock))
    rows = office.report(DAY)
    assert [(r.person_id, r.status, r.minutes_late, r.outings, r.minutes_out) for r in rows] == [
        ("ana", "absent", 0, 0, 0), ("lin", "late", 12, 1, 30)
    ]
    text = write(rows, "csv").decode("utf-8")
    assert text.startswith("\ufeff")
    table = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert table[0] == list(COLUMNS)
    assert table[2][:10] == ["2025-03-04", "lin", "Lin-Manuel", "3A", "morning", "late", "09:12", "", "12", "1"]
    sheet = load_workbook(io.BytesIO(write(rows, "xlsx"))).active
    assert sheet is not None
    cells = [[None if c is None else str(c) for c in r] for r in sheet.iter_rows(values_only=True)]
    assert cells[1:] == [[None if c == "" else c for c in line] for line in table[1:]]  # minutes are numbers there
    assert sheet["I3"].value == 12
    document = json.loads(write(rows, "json"))
    assert document["rows"][1]["first_entry"] == "2025-03-04T09:12:00+09:00"
    with pytest.raises(ExportError, match="format must be one of"):
        write(rows, "pdf")


def test_report_range_is_bounded(office: Office) -> None:
    with pytest.raises(OfficeError, match="ends"):
        office.report_range(DAY, DAY - timedelta(days=1))
    with pytest.raises(OfficeError, match="at most 366 days"):
        office.report_range(DAY, DAY + timedelta(days=400))


def test_the_office_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "central.db")
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, ["central", *args, "--db", db], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    (tmp_path / "people.csv").write_text("person_id,name,group,active\nlin,Lin-Manuel,3A,yes\nana,Ana,,no\n")
    (tmp_path / "t.yml").write_text(TIMETABLE)
    assert "2 people added" in run("people", "import", str(tmp_path / "people.csv"))
    assert "1 sessions" in run("timetable", "set", str(tmp_path / "t.yml"))
    assert json.loads(run("timetable", "show"))["timezone"] == "Asia/Seoul"
    assert "lin\tLin-Manuel\t3A\tactive" in run("people", "list")
    assert "manual_entry at 09:01" in run("correct", "2025-03-04", "lin", "manual_entry", "--by", "me", "--why",
                                          "badge", "--at", "09:01")  # fmt: skip
    out = run("report", "--date", "2025-03-04")
    assert "2025-03-04,lin,Lin-Manuel,3A,morning,present,09:01,,0,0,0,,,yes" in out
    run("report", "--from", "2025-03-03", "--to", "2025-03-04", "--format", "xlsx", "--output",
        str(tmp_path / "r.xlsx"))  # fmt: skip
    assert load_workbook(tmp_path / "r.xlsx").active.max_row == 3  # type: ignore[union-attr]
    bad = runner.invoke(main, ["central", "correct", "2025-03-04", "zed", "excused", "--by", "me", "--why", "x",
                               "--db", db])  # fmt: skip
    assert bad.exit_code != 0 and "no person 'zed'" in bad.output and "Traceback" not in bad.output
