"""CLI: every user mistake is one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import click
import pytest
from click.testing import CliRunner

from edge.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def run(args: List[str], tmp_path: Path) -> click.testing.Result:
    return CliRunner().invoke(main, ["--db", str(tmp_path / "edge.db"), *args], catch_exceptions=False)


def all_commands(group: click.Group, prefix: str = "") -> List[tuple]:
    out = []
    for name, cmd in group.commands.items():
        out.append((f"{prefix}{name}", cmd))
        if isinstance(cmd, click.Group):
            out.extend(all_commands(cmd, f"{prefix}{name} "))
    return out


@pytest.mark.parametrize("name, command", all_commands(main))
def test_every_command_has_help_and_is_in_the_readme(name: str, command: click.Command) -> None:
    assert command.help, f"edge {name} has no help text"
    assert f"edge {name}" in README, f"README does not mention `edge {name}`"


@pytest.mark.parametrize(
    "args, message",
    [
        (["enroll"], "give --person-id ID and photos, or --tree DIR"),
        (["enroll", "--person-id", "p1"], "give at least one photo"),
        (["enroll", "--tree", "x", "--person-id", "p1"], "not both"),
        (["enroll", "--person-id", "p1", "--meta", "novalue", "a.jpg"], "--meta expects KEY=VALUE"),
        (["gallery", "show", "nobody"], "no box database: "),
        (["gallery", "remove", "nobody"], "no box database: "),
    ],
)
def test_user_mistakes_are_one_line(tmp_path: Path, args: List[str], message: str) -> None:
    result = run(args, tmp_path)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.yml"
    cfg.write_text("matcher:\n  threshhold: 0.3\n")
    result = CliRunner().invoke(main, ["--config", str(cfg), "gallery", "list"])
    assert result.exit_code == 1
    assert "matcher.threshhold (line 2): unknown key" in result.output
    checked = CliRunner().invoke(main, ["check-config", str(cfg)])
    assert checked.exit_code == 1 and "matcher.threshhold (line 2)" in checked.output


def test_check_config_accepts_the_example() -> None:
    example = Path(__file__).resolve().parent.parent / "config" / "edge.example.yml"
    result = CliRunner().invoke(main, ["check-config", str(example)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_import_of_a_broken_file_changes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run(["gallery", "import", str(bad)], tmp_path)
    assert result.exit_code == 1 and "not valid JSON" in result.output
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "edge-gallery", "format_version": 1, "people": [{"person_id": "a"}]}))
    result = run(["gallery", "import", str(wrong)], tmp_path)
    assert result.exit_code == 1 and "people[0].embeddings: must be a non-empty list" in result.output
    listed = run(["gallery", "list", "--json"], tmp_path)
    assert listed.exit_code == 1 and "no box database" in listed.output  # not even an empty database was made
    assert not (tmp_path / "edge.db").exists()


def test_events_list_and_export_filter_by_date_person_and_type(tmp_path: Path) -> None:
    import csv
    import io
    from datetime import datetime, timedelta, timezone

    from edge.attendance import AttendanceEvent, EventType
    from edge.store import EventContext, EventStore

    kst = timezone(timedelta(hours=9))
    db = tmp_path / "edge.db"

    def event(kind: EventType, person: str, day: int, hour: int) -> AttendanceEvent:
        at = datetime(2026, 11, day, hour, 0, tzinfo=kst)
        return AttendanceEvent(kind, person, "door", at, at, "morning", "t1", 0.7, 0.2, 9, 0.8)

    with EventStore(db, "box") as store:
        context = EventContext(gallery_version=3, model_id="m", mono_time=1.0, wall_time=1.0)
        store.append([event(EventType.ENTRY, "ann", 23, 9), event(EventType.LATE, "ann", 23, 9)], context)
        store.append([event(EventType.ENTRY, "bob", 23, 10)], context)
        store.append([event(EventType.ENTRY, "ann", 24, 9)], context)
        epoch = store.epoch
    cfg = tmp_path / "edge.yml"
    cfg.write_text(f"device: {{id: box, timezone: Asia/Seoul}}\nstorage: {{database: {db}}}\n")
    runner = CliRunner()
    listed = runner.invoke(
        main,
        ["--config", str(cfg), "events", "list", "--since", "2026-11-23", "--until", "2026-11-23", "--person", "ann"],
    )
    assert listed.exit_code == 0, listed.output
    lines = [ln for ln in listed.output.splitlines() if ln.startswith("box-")]
    assert [ln.split()[2] for ln in lines] == ["entry", "late"]
    exported = runner.invoke(main, ["--config", str(cfg), "events", "export", "--type", "entry"])
    rows = list(csv.DictReader(io.StringIO(exported.output)))
    assert [(r["person_id"], r["at"][:10]) for r in rows] == [
        ("ann", "2026-11-23"),
        ("bob", "2026-11-23"),
        ("ann", "2026-11-24"),
    ]
    as_json = runner.invoke(
        main, ["--config", str(cfg), "events", "export", "--format", "json", "--since", "2026-11-24"]
    )
    assert [json.loads(line)["event_id"] for line in as_json.output.splitlines()] == [f"box-{epoch}-0000000004"]
    bad = runner.invoke(main, ["--config", str(cfg), "events", "list", "--type", "party"])
    assert bad.exit_code == 2 and "unknown type 'party'" in bad.output
    bad_date = runner.invoke(main, ["--config", str(cfg), "events", "list", "--since", "yesterday"])
    assert bad_date.exit_code == 2 and "not an ISO 8601" in bad_date.output


def test_gallery_export_import_show_remove_round_trip(tmp_path: Path) -> None:
    import numpy as np

    from edge.gallery.store import Gallery, NewEmbedding
    from edge.manifest import load_manifest

    model = load_manifest().id
    rng = np.random.default_rng(0)

    def emb() -> NewEmbedding:
        v = rng.normal(size=128).astype(np.float32)
        return NewEmbedding(v / np.linalg.norm(v), model, 0.8, "photo:a.jpg")

    src = tmp_path / "a.db"
    with Gallery(src) as gallery:
        gallery.put_person("s1", "김민지", [emb(), emb()], metadata={"group": "3A"})
        gallery.put_person("s2", "Bob", [emb()])
    runner = CliRunner()
    exported = tmp_path / "gallery.json"
    assert runner.invoke(main, ["--db", str(src), "gallery", "export", str(exported)]).exit_code == 0
    doc = json.loads(exported.read_text())
    assert doc["format"] == "edge-gallery" and [p["person_id"] for p in doc["people"]] == ["s1", "s2"]
    assert exported.stat().st_mode & 0o777 == 0o600  # embeddings are biometric data
    nowhere = runner.invoke(main, ["--db", str(src), "gallery", "export", str(tmp_path / "no" / "g.json")])
    assert nowhere.exit_code == 1 and "cannot write" in nowhere.output and "Traceback" not in nowhere.output
    dst = tmp_path / "b.db"
    imported = runner.invoke(main, ["--db", str(dst), "gallery", "import", str(exported)])
    assert imported.exit_code == 0 and "imported 2 people" in imported.output
    shown = runner.invoke(main, ["--db", str(dst), "gallery", "show", "s1"])
    assert "김민지" in shown.output and '"group": "3A"' in shown.output and shown.output.count(model) == 2
    assert runner.invoke(main, ["--db", str(dst), "gallery", "remove", "s1"]).exit_code == 0
    listed = json.loads(runner.invoke(main, ["--db", str(dst), "gallery", "list", "--json"]).output)
    assert [p["person_id"] for p in listed["people"]] == ["s2"]
    doc["people"][0]["embeddings"][0]["model_id"] = "another-model"
    exported.write_text(json.dumps(doc))
    refused = runner.invoke(main, ["--db", str(dst), "gallery", "import", str(exported)])
    assert refused.exit_code == 1 and "another-model" in refused.output


@pytest.mark.parametrize(
    "args",
    [
        ["gallery", "list"],
        ["gallery", "list", "--json"],
        ["gallery", "show", "p1"],
        ["gallery", "remove", "p1"],
        ["gallery", "export", "-"],
        ["events", "list"],
        ["events", "export"],
        ["identify", "photo.jpg"],
    ],
)
def test_commands_that_read_the_box_never_create_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: List[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    monkeypatch.delenv("EDGE_DB", raising=False)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert f"no box database: var/edge.db in {tmp_path} does not exist" in result.output
    assert "no --config" in result.output and "nothing was created" in result.output
    assert not (tmp_path / "var").exists()
    config = tmp_path / "edge.yml"
    config.write_text(f"storage:\n  database: {tmp_path / 'box.db'}\n")
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    assert result.exit_code == 1 and f"{tmp_path / 'box.db'} does not exist (from storage.database in {config})" in (
        result.output
    )
    assert not (tmp_path / "box.db").exists()


def test_show_and_remove_of_an_unknown_person_in_an_existing_gallery(tmp_path: Path) -> None:
    from edge.gallery.store import Gallery

    with Gallery(tmp_path / "edge.db"):
        pass
    for args in (["gallery", "show", "nobody"], ["gallery", "remove", "nobody"]):
        result = run(args, tmp_path)
        assert result.exit_code == 1 and "no person with id 'nobody'" in result.output
