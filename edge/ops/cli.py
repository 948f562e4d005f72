"""`edge status` and `edge doctor`: thin click commands over edge.ops.status and edge.ops.doctor."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status document and the problems as JSON.")
@click.pass_obj
def status(app: Any, as_json: bool) -> None:
    """What the running daemon is doing (cameras, last frames, outbox, last event, gallery, model, disk, uptime),
    from the status file it rewrites each second; exit code 1 when something is wrong or it is not running."""
    from edge.errors import EdgeError
    from edge.ops.settings import status_path
    from edge.ops.status import problems, read_status, render

    path = status_path(app.config.ops, Path(app.db_path))
    now = time.time()
    try:
        document = read_status(path)
    except EdgeError as exc:
        if as_json:
            click.echo(json.dumps({"status_file": str(path), "problems": [{"what": "daemon", "detail": str(exc)}]}))
            raise SystemExit(1) from None
        raise
    found = problems(document, now, app.config.ops.min_free_mb, app.config.ops.max_unacked_age_s)
    if as_json:
        out = {"status_file": str(path), **document, "problems": [vars(p) for p in found]}
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        for line in render(document, found, now):
            click.echo(line)
    if found:
        raise SystemExit(1)


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.pass_obj
def doctor(app: Any, as_json: bool) -> None:
    """Check that this box can work: models (sha256), database (integrity, permissions), disk, clock sync, OpenCV's
    GStreamer, each camera (resolution, fps), the broker (TLS, login, ACL); exit code 1 when a check fails."""
    from edge.credentials import with_mqtt_password
    from edge.ops.doctor import FAIL, render, run_checks

    checks = run_checks(with_mqtt_password(app.config), Path(app.db_path))
    if as_json:
        click.echo(json.dumps({"checks": [c.as_dict() for c in checks]}, ensure_ascii=False, indent=2))
    else:
        for line in render(checks):
            click.echo(line)
    if any(c.status == FAIL for c in checks):
        raise SystemExit(1)
