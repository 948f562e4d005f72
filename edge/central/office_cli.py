"""`edge central people|timetable|correct|report`: the attendance office on the command line (thin over
edge.central.office; every command opens the central's SQLite file, does one thing and closes it).

    edge central people add p-17 "Lin-Manuel" --group 3A
    edge central timetable set timetable.yml          # the schedule's YAML keys plus `timezone:`
    edge central timetable push --site school-1 --device box-17 --host broker --key-file central.key
    edge central correct 2025-03-04 p-17 excused --by office --why "doctor's note"
    edge central report --date 2025-03-04 --group 3A --format xlsx --output 3A.xlsx
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterator, Optional

import click

from edge.central.backend import TARGET_HELP, StoreTarget
from edge.cligroup import EdgeGroup

DB_HELP = f"The central's store (written by `edge central run`): {TARGET_HELP}."


def db_option(func: Any) -> Any:
    return click.option("--db", type=StoreTarget(), default="central.db", show_default=True, help=DB_HELP)(func)


@contextmanager
def _office(db: str) -> Iterator[Any]:
    from edge.central.office import Office
    from edge.central.store import CentralStore

    store = CentralStore(db)
    try:
        yield Office(store)
    finally:
        store.close()


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"expected a date YYYY-MM-DD, got {text!r}") from None


# people --------------------------------------------------------------------------------------------------------------
@click.group(cls=EdgeGroup)
def people() -> None:
    """The roster: person id (as in the boxes' galleries), name, group, active."""


@people.command("list")
@db_option
def people_list(db: str) -> None:
    """Print the roster, one person a line (id, name, group, active)."""
    with _office(db) as office:
        roster = office.people()
    for p in roster:
        click.echo(f"{p.person_id}\t{p.name}\t{p.group or '-'}\t{'active' if p.active else 'inactive'}")
    click.echo(f"{len(roster)} people", err=True)


@people.command("add")
@db_option
@click.argument("person_id")
@click.argument("name")
@click.option("--group", help="Group whose sessions they follow (none: the shared sessions).")
@click.option("--inactive", is_flag=True, help="On the roster but not expected (never absent).")
def people_add(db: str, person_id: str, name: str, group: Optional[str], inactive: bool) -> None:
    """Add a person, or change their name, group and active flag."""
    from edge.central.office import Person

    try:
        person = Person(person_id, name, group, not inactive)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    with _office(db) as office:
        office.put_person(person)
    click.echo(f"{person_id}: {name} ({group or 'no group'}, {'inactive' if inactive else 'active'})")


@people.command("import")
@db_option
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def people_import(db: str, csv_file: Path) -> None:
    """Add or update people from a CSV file with a header: person_id,name[,group][,active] (active: yes/no)."""
    from edge.central.office import Person

    rows = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8-sig"))))
    roster = []
    for line, row in enumerate(rows, start=2):
        try:
            active = (row.get("active") or "yes").strip().lower() not in ("no", "false", "0")
            roster.append(Person(row["person_id"].strip(), (row.get("name") or "").strip(),
                                 (row.get("group") or "").strip() or None, active))  # fmt: skip
        except (KeyError, AttributeError, ValueError) as exc:
            raise click.ClickException(f"{csv_file}, line {line}: {exc}") from None
    with _office(db) as office:
        for person in roster:
            office.put_person(person)
    click.echo(f"{len(roster)} people added or updated")


@people.command("set-active")
@db_option
@click.argument("person_id")
@click.option("--active/--inactive", required=True, help="Expected from now on, or not (never absent).")
def people_set_active(db: str, person_id: str, active: bool) -> None:
    """Mark a person active or inactive."""
    with _office(db) as office:
        office.set_active(person_id, active)
    click.echo(f"{person_id}: {'active' if active else 'inactive'}")


# timetable -----------------------------------------------------------------------------------------------------------
@click.group(cls=EdgeGroup)
def timetable() -> None:
    """The one timetable of the site: sessions, closures, one-off changes; pushed to every box."""


@timetable.command("show")
@db_option
def timetable_show(db: str) -> None:
    """Print the stored timetable as JSON."""
    with _office(db) as office:
        click.echo(json.dumps(office.timetable().document(), indent=2, ensure_ascii=False))


@timetable.command("set")
@db_option
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def timetable_set(db: str, file: Path) -> None:
    """Store the timetable of FILE (YAML or JSON: the keys of a box's attendance.schedule plus `timezone`)."""
    from edge.central.timetable import load_timetable

    new = load_timetable(file.read_text(encoding="utf-8"), str(file))
    with _office(db) as office:
        office.put_timetable(new)
    s = new.schedule
    click.echo(f"timetable stored: {len(s.sessions)} sessions, {len(s.closures)} closures, {len(s.changes)} changes; "
               "push it to the boxes with `edge central timetable push`")  # fmt: skip


def register(central: click.Group, broker_options: Any, target_options: Any, send: Any) -> None:
    """Add the office's commands to `edge central` (the push needs the broker and target options of cli.py)."""

    @timetable.command("push")
    @db_option
    @broker_options
    @target_options
    @click.option("--clear", is_flag=True, help="Hand the box back to its own YAML schedule.")
    def timetable_push(db: str, site: str, device: str, base_version: Optional[int], timeout: float,
                       key_file: Path, clear: bool, **broker: Any) -> None:  # fmt: skip
        """Send the stored timetable to one box (signed); its late/early_leave follow it from the next frame."""
        from edge.central.server import timetable_command

        with _office(db) as office:
            document = None if clear else office.timetable().document()["schedule"]
        send(broker, {"site": site, "device": device, "timeout": timeout, "key_file": key_file},
             timetable_command(document))  # fmt: skip

    central.add_command(people)
    central.add_command(timetable)
    central.add_command(correct)
    central.add_command(report)


# corrections and reports ---------------------------------------------------------------------------------------------
@click.command()
@db_option
@click.argument("day")
@click.argument("person_id")
@click.argument("kind", type=click.Choice(["excused", "manual_entry", "manual_exit"]))
@click.option("--by", "made_by", required=True, help="Who makes the correction.")
@click.option("--why", required=True, help="Why (kept with it).")
@click.option("--at", "clock", help="HH:MM (site time) of a manual entry or exit.")
def correct(db: str, day: str, person_id: str, kind: str, made_by: str, why: str, clock: Optional[str]) -> None:
    """Record a correction for PERSON_ID on DAY (YYYY-MM-DD): excused, manual_entry or manual_exit. Kept as its own
    audit row; the events are never edited."""
    when = _day(day)
    at = None
    if clock is not None:
        try:
            at = datetime.combine(when, datetime.strptime(clock, "%H:%M").time())
        except ValueError:
            raise click.BadParameter(f"expected HH:MM, got {clock!r}", param_hint="--at") from None
    with _office(db) as office:
        fix = office.correct(when, person_id, kind, made_by, why, at)
    click.echo(f"correction {fix.id}: {fix.date} {fix.person_id} {fix.kind}" + (f" at {clock}" if clock else ""))


@click.command()
@db_option
@click.option("--date", "day", help="The day (YYYY-MM-DD; default today).")
@click.option("--from", "start", help="First day of a range (with --to).")
@click.option("--to", "end", help="Last day of a range, inclusive.")
@click.option("--group", help="Only this group.")
@click.option("--person", "person_id", help="Only this person.")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx", "json"]), default="csv", show_default=True,
              help="CSV (UTF-8 with a BOM), XLSX (needs --output) or JSON.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write here (default: stdout).")
def report(db: str, day: Optional[str], start: Optional[str], end: Optional[str], group: Optional[str],
           person_id: Optional[str], fmt: str, output: Optional[Path]) -> None:  # fmt: skip
    """The attendance report: one row per person and session (present, late, absent, left_early, excused), with
    first entry, last exit, minutes late, outings and minutes out, the box and camera."""
    from edge.central.export import write

    if day is not None and (start or end):
        raise click.UsageError("give either --date or --from/--to")
    if (start is None) != (end is None):
        raise click.UsageError("--from and --to go together")
    first = _day(start) if start else _day(day) if day else date.today()
    last = _day(end) if end else first
    with _office(db) as office:
        rows = office.report_range(first, last, group=group, person_id=person_id)
    data = write(rows, fmt)
    if output is not None:
        output.write_bytes(data)
        click.echo(f"{len(rows)} rows written to {output}", err=True)
    elif fmt == "xlsx":
        raise click.UsageError("XLSX is binary: give --output FILE")
    else:
        click.echo(data.decode("utf-8").lstrip("\ufeff"), nl=False)
