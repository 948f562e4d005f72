"""`edge eval door`: the door-pass benchmark's command (a thin wrapper over edge.door.bench.run_door)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import click

from edge.door.plan import CONDITIONS, PlanSize


def default_data() -> Path:
    return Path(os.environ.get("EDGE_TEST_DATA", "../shared/data"))


@click.command("door")
@click.option(
    "--data",
    type=click.Path(path_type=Path, file_okay=False),
    help="Shared data folder. Env: EDGE_TEST_DATA (default ../shared/data).",
)
@click.option("--passes", default=500, show_default=True, help="Walks of enrolled people (at least).")
@click.option("--strangers", default=500, show_default=True, help="Walks of strangers (never enrolled).")
@click.option("--people", default=120, show_default=True, help="Enrolled people who walk.")
@click.option("--gallery-size", default=1000, show_default=True, help="People in the gallery (the rest are fillers).")
@click.option("--people-per-day", default=12, show_default=True, help="Enrolled people per benchmark day.")
@click.option("--conditions", default=",".join(CONDITIONS), show_default=True, help="Comma-separated conditions.")
@click.option(
    "--enroll-photos", default=2, show_default=True, help="Photos each person is enrolled from (one is kept to walk)."
)
@click.option("--seed", default=1, show_default=True, help="Seed of the people, script and renderings.")
@click.option("--workers", default=1, show_default=True, help="Days rendered and replayed at once (processes).")
@click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    help="Cache of face boxes and filler embeddings (default: in the temp dir).",
)
@click.option(
    "--keep", type=click.Path(path_type=Path, file_okay=False), help="Keep clips and databases in this folder."
)
@click.option("--no-hamilton", is_flag=True, help="Skip the real-video check (the Hamilton clip).")
@click.option(
    "--all-frames", is_flag=True, help="Also embed every usable frame of each walk (slower): what the tracker skipped."
)
@click.option(
    "--dump",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write each walk's embeddings and the gallery (.npz) here, for scripts/door_rules.py.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (with every missed pass).")
@click.pass_obj
def door(app: Any, data: Optional[Path], passes: int, strangers: int, people: int, gallery_size: int,
         people_per_day: int, conditions: str, enroll_photos: int, seed: int, workers: int, cache: Optional[Path], keep: Optional[Path],
         no_hamilton: bool, all_frames: bool, dump: Optional[Path], as_json: bool) -> None:  # fmt: skip
    """Door passes rendered from the shared data, replayed through the daemon: recall, false identities, unknowns,
    time to the event and embeddings per pass, per condition; plus the Hamilton clip's replay."""
    from edge.door.bench import DoorOptions, format_report, run_door

    try:
        size = PlanSize(passes, strangers, people, gallery_size, people_per_day,
                        tuple(c.strip() for c in conditions.split(",") if c.strip()), seed, enroll_photos)  # fmt: skip
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if workers < 1:
        raise click.UsageError("workers must be >= 1")
    root = data or default_data()
    if not (root / "lfw-view1").is_dir():
        raise click.ClickException(f"{root}: no lfw-view1 folder (give --data or set EDGE_TEST_DATA)")
    options = DoorOptions(
        root.resolve(), size, workers, cache, keep, hamilton=not no_hamilton, all_frames=all_frames, dump=dump
    )
    report = run_door(app.config, options, progress=lambda line: click.echo(line, file=sys.stderr))
    click.echo(json.dumps(report, indent=1) if as_json else format_report(report))
