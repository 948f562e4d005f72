"""The `edge` command: thin click wrappers over the library; an EdgeError becomes one line and exit code 1."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import click

from edge.cligroup import EdgeGroup
from edge.errors import EdgeError

EXIT_USER_ERROR = 1



class AppContext:
    """What commands share: the config, and components built on first use (models load only when needed)."""

    def __init__(self, config_path: Optional[Path], db: Optional[Path]) -> None:
        from edge.config import load_config

        self.config = load_config(config_path)
        self.config_path = config_path
        self.db_path = db or self.config.storage.database
        self.db_given = db is not None
        self.stack = ExitStack()

    def gallery(self, create: bool = False) -> Any:
        """The box's gallery; only commands that write (enroll, import) may create the database."""
        from edge.gallery.store import Gallery

        if not create:
            self.require_database()
        return self.stack.enter_context(Gallery(self.db_path))

    def require_database(self) -> None:
        """Commands that read the box's data never create a database: say where it was looked for instead."""
        path = Path(self.db_path)
        if path.is_file() and path.stat().st_size > 0:
            return
        if self.db_given:
            source = "--db (or EDGE_DB)"
        elif self.config_path is not None:
            source = f"storage.database in {self.config_path}"
        else:
            source = "the built-in default storage.database, as no --config (or EDGE_CONFIG) was given"
        where = path if path.is_absolute() else f"{path} in {Path.cwd()}"
        state = "is empty" if path.is_file() else "does not exist"
        raise EdgeError(
            f"no box database: {where} {state} (from {source}); nothing was created. "
            "Give the box's config (--config /etc/edge/edge.yml) or --db FILE"
        )

    def recognizer(self) -> Any:
        from edge.detect import FaceDetector
        from edge.embed import Embedder
        from edge.recognize import Recognizer

        detector = self.stack.enter_context(FaceDetector(self.config.detector))
        embedder = Embedder(self.config.embedder.models_path, self.config.embedder.num_threads)
        return Recognizer(detector, embedder, self.config.quality)


pass_app = click.make_pass_decorator(AppContext)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from edge.version import software_version

    click.echo(f"edge, version {software_version()}")
    ctx.exit()


@click.group(cls=EdgeGroup)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version (from git tags: see CHANGELOG.md) and exit.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="EDGE_CONFIG",
    help="YAML config file (default: built-in defaults). Env: EDGE_CONFIG.",
)
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="EDGE_DB",
    help="SQLite database (default: storage.database from the config). Env: EDGE_DB.",
)
@click.pass_context
def main(ctx: click.Context, config_path: Optional[Path], db: Optional[Path]) -> None:
    """edge: face-recognition attendance on a camera box."""
    if ctx.invoked_subcommand in ("check-config", "central", "broker"):
        return
    try:
        app = AppContext(config_path, db)
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.obj = app
    ctx.call_on_close(app.stack.close)


@main.command("check-config")
@click.argument("file", type=click.Path(path_type=Path))
def check_config(file: Path) -> None:
    """Validate a config FILE; print OK, or every error with its key path and line (never a password); say whether
    this OpenCV has GStreamer (a camera pipeline needs it)."""
    from edge.config import load_config
    from edge.credentials import with_mqtt_password

    config = with_mqtt_password(load_config(file))  # the password file (or EDGE_MQTT_PASSWORD) is checked too
    import cv2

    from edge.capture.live import opencv_has_gstreamer
    from edge.errors import ConfigError

    gstreamer = opencv_has_gstreamer()
    pipelines = [c.id for c in config.cameras if c.enabled and (c.pipeline is not None or c.backend == "gstreamer")]
    if pipelines and not gstreamer:
        raise ConfigError(
            f"{file}: cameras {', '.join(pipelines)} need GStreamer, but this OpenCV {cv2.__version__} has none "
            "(pip's never has): install with scripts/install_box.sh --system-opencv (the distribution's OpenCV)"
        )
    click.echo(f"OpenCV {cv2.__version__}: GStreamer {'yes' if gstreamer else 'no'} (a camera pipeline needs it)")
    click.echo(f"{file}: OK")


# enrollment ----------------------------------------------------------------------------------------------------
def _report_photo(result: Any) -> str:
    mark = "ok " if result.outcome.value == "enrolled" else "-- "
    detail = f" ({result.detail})" if result.detail else ""
    return f"  {mark}{result.outcome.value:<14}{result.path}{detail}"


@main.command()
@click.option("--person-id", help="Id of the person to enroll (letters, digits, _ . @ -).")
@click.option("--name", help="Display name (default: the person id).")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Free metadata, repeatable (e.g. group=3A).")
@click.option("--tree", type=click.Path(path_type=Path, file_okay=False), help="Enroll a folder tree person_id/*.jpg.")
@click.option("--replace", is_flag=True, help="Replace a person's existing embeddings instead of adding to them.")
@click.argument("photos", nargs=-1, type=click.Path(path_type=Path))
@pass_app
def enroll(
    app: AppContext,
    person_id: Optional[str],
    name: Optional[str],
    meta: Sequence[str],
    tree: Optional[Path],
    replace: bool,
    photos: Sequence[Path],
) -> None:
    """Enroll one person from PHOTOS, or every person of a --tree. A person is written all at once or not at all."""
    from edge.enroll import enroll_person, enroll_tree, photos_in, scan_tree

    if tree and (person_id or photos):
        raise click.UsageError("use either --tree DIR or --person-id ID PHOTO..., not both")
    if not tree and not person_id:
        raise click.UsageError("give --person-id ID and photos, or --tree DIR")
    if person_id and not photos:
        raise click.UsageError("give at least one photo for --person-id")
    metadata: Dict[str, str] = {}
    for item in meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--meta expects KEY=VALUE, got {item!r}")
        metadata[key] = value
    if tree:
        total = sum(len(p) for _, p in scan_tree(tree))
    else:
        expanded: List[Path] = []
        for p in photos:
            expanded.extend(photos_in(p) if p.is_dir() else [p])
        total = len(expanded)
    gallery, recognizer = app.gallery(create=True), app.recognizer()
    lines: List[str] = []
    with click.progressbar(length=total, label="enrolling", file=sys.stderr) as bar:

        def on_photo(result: Any) -> None:
            lines.append(_report_photo(result))
            bar.update(1)

        if tree:
            results = enroll_tree(gallery, recognizer, tree, replace=replace, on_photo=on_photo)
        else:
            assert person_id is not None
            results = [
                enroll_person(gallery, recognizer, person_id, name or person_id, expanded, metadata, replace, on_photo)
            ]
    for line in lines:
        click.echo(line)
    failed = [r for r in results if not r.written]
    for r in results:
        state = f"written ({r.enrolled} embeddings)" if r.written else "NOT written (no usable photo)"
        click.echo(f"{r.person_id}: {state}{' + a fused template' if r.template else ''}")
        similar = [(p.path, p.similarity) for p in r.photos if p.similarity is not None]
        if similar:
            click.echo("  consistency (mean similarity to the other photos): " + ", ".join(
                f"{Path(path).name} {value:.2f}" for path, value in similar))  # fmt: skip
        for path in r.flagged:
            click.echo(f"  FLAGGED {path}: too unlike the person's other photos (another person?); left out of the template")
    click.echo(f"gallery version {gallery.version}: {len(results) - len(failed)} of {len(results)} people written")
    if failed:
        raise click.ClickException(
            f"{len(failed)} people could not be enrolled: {', '.join(r.person_id for r in failed)}"
        )


# gallery -------------------------------------------------------------------------------------------------------
@main.group()
def gallery() -> None:
    """List, show, remove, export and import enrolled people."""


@gallery.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_app
def gallery_list(app: AppContext, as_json: bool) -> None:
    """List enrolled people with their number of embeddings."""
    g = app.gallery()
    people = g.people()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "gallery_version": g.version,
                    "people": [
                        {"person_id": p.person_id, "name": p.name, "metadata": p.metadata, "embeddings": p.embeddings}
                        for p in people
                    ],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    for p in people:
        click.echo(f"{p.person_id}\t{p.name}\t{p.embeddings} embeddings")
    click.echo(f"{len(people)} people, gallery version {g.version}")


@gallery.command("show")
@click.argument("person_id")
@pass_app
def gallery_show(app: AppContext, person_id: str) -> None:
    """Show one person: name, metadata, and each embedding's model, quality and source."""
    g = app.gallery()
    person = g.person(person_id)
    click.echo(f"{person.person_id}: {person.name}")
    click.echo(f"metadata: {json.dumps(person.metadata, ensure_ascii=False)}")
    for e in g.embeddings_of(person_id):
        click.echo(f"  #{e['id']} {e['model_id']} quality {e['quality']:.2f} from {e['source']} at {e['created_at']}")


@gallery.command("remove")
@click.argument("person_id")
@pass_app
def gallery_remove(app: AppContext, person_id: str) -> None:
    """Erase a person and all their embeddings."""
    version = app.gallery().remove_person(person_id)
    click.echo(f"removed {person_id}; gallery version {version}")


@gallery.command("export")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@pass_app
def gallery_export(app: AppContext, file: Path) -> None:
    """Write the gallery to FILE (- for stdout) in the edge-gallery JSON format (see README)."""
    from edge.gallery.exchange import export_document

    text = json.dumps(export_document(app.gallery()), ensure_ascii=False)
    if str(file) == "-":
        click.echo(text)
    else:
        from edge.private import write_private

        tmp = file.with_name(file.name + ".tmp")
        try:
            write_private(tmp, text.encode("utf-8"))  # embeddings are biometric data: owner-only, like the database
            tmp.replace(file)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise click.ClickException(f"cannot write {file}: {exc.strerror or exc}") from None
        click.echo(f"exported to {file}", err=True)


@gallery.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--replace-all", is_flag=True, help="Make the gallery exactly the file's people (others are erased).")
@pass_app
def gallery_import(app: AppContext, file: Path, replace_all: bool) -> None:
    """Import people from an edge-gallery JSON FILE, all at once or not at all."""
    from edge.gallery.exchange import parse_people, read_document
    from edge.manifest import load_manifest

    model_id = load_manifest(app.config.embedder.models_path).id
    records = parse_people(read_document(file), model_id, str(file))
    version = app.gallery(create=True).put_people(records, replace_all=replace_all)
    click.echo(f"imported {len(records)} people; gallery version {version}")


# identification ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per photo.")
@pass_app
def identify(app: AppContext, photos: Sequence[Path], as_json: bool) -> None:
    """Find every face in PHOTOS and say who it is (or unknown), with box, quality and best matches."""
    from edge.identify import identify_photo

    gallery, recognizer = app.gallery(), app.recognizer()
    errors = 0
    for photo in photos:
        report = identify_photo(gallery, recognizer, app.config.matcher, photo)
        errors += 1 if report.get("error") else 0
        if as_json:
            click.echo(json.dumps(report, ensure_ascii=False))
            continue
        if report.get("error"):
            click.echo(f"{photo}: ERROR {report['error']}")
            continue
        click.echo(f"{photo}: {len(report['faces'])} faces")
        for face in report["faces"]:
            box = face["box"]
            who = face["person_id"] or ("unknown" if face["rejection"] is None else f"not used: {face['rejection']}")
            cands = ", ".join(f"{c['person_id']} {c['score']:.3f}" for c in face["candidates"])
            click.echo(
                f"  [{box[0]:.0f},{box[1]:.0f} {box[2]:.0f}x{box[3]:.0f}] {who}"
                f" (quality {face['quality']:.2f}; best: {cands or 'gallery empty'})"
            )
    if errors:
        raise click.ClickException(f"{errors} of {len(photos)} photos could not be read")


# evaluation ----------------------------------------------------------------------------------------------------
@main.group("eval")
def eval_group() -> None:
    """Measure recognition accuracy on standard protocols."""


@eval_group.command("lfw")
@click.option(
    "--pairs", required=True, type=click.Path(path_type=Path, dir_okay=False), help="LFW pairs file to report on."
)
@click.option(
    "--images", required=True, type=click.Path(path_type=Path, file_okay=False), help="lfw folder: Name/Name_NNNN.jpg."
)
@click.option("--train-pairs", type=click.Path(path_type=Path, dir_okay=False), help="Pick the threshold on this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def eval_lfw(app: AppContext, pairs: Path, images: Path, train_pairs: Optional[Path], as_json: bool) -> None:
    """LFW verification: accuracy (threshold from --train-pairs, or 10-fold), TAR at FAR=1e-3, faces not found."""
    from edge.evaluate import run_lfw

    if not images.is_dir():
        raise click.ClickException(f"{images}: images folder not found")
    recognizer = app.recognizer()
    result = run_lfw(recognizer, pairs, images, train_pairs, progress=not as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        from edge.evaluate import format_result

        click.echo(format_result(result))


@main.command()
@click.option("--gallery-size", type=click.IntRange(min=2), help="People the gallery will hold (default: as now).")
@click.option(
    "--target-rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.001, show_default=True,
    help="Largest acceptable share of stranger passes named as someone.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def calibrate(app: AppContext, gallery_size: Optional[int], target_rate: float, as_json: bool) -> None:
    """Pick matcher.fused_threshold for this site's gallery from its own enrolled photos, with the expected
    false-identity rate (a larger gallery needs a higher threshold)."""
    from edge.calibrate import as_dict, format_calibration
    from edge.calibrate import calibrate as run_calibration
    from edge.manifest import load_manifest

    model_id = load_manifest(app.config.embedder.models_path).id
    result = run_calibration(app.gallery(), model_id, gallery_size, target_rate)
    click.echo(json.dumps(as_dict(result)) if as_json else format_calibration(result))


def _register_door() -> None:
    from edge.door.cli import door

    eval_group.add_command(door)


_register_door()


def _register_liveness() -> None:
    from edge.liveness.cli import liveness

    eval_group.add_command(liveness)


_register_liveness()


# the daemon ----------------------------------------------------------------------------------------------------
def _setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        from edge.capture.live import quiet_opencv

        # edge logs each camera state change once; OpenCV would add its own warnings on every reconnect attempt
        quiet_opencv()


@main.command()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--init",
    is_flag=True,
    help="Start a new event database (new epoch) when the one this box had is missing, empty, replaced or lost "
    "committed events; without it edge refuses to start then. Unsent events and the gallery of a lost database "
    "are gone: the central server must sync the gallery again.",
)
@pass_app
def run(app: AppContext, verbose: bool, init: bool) -> None:
    """Watch the configured cameras and record attendance until SIGTERM or SIGINT (the daemon)."""
    import signal
    import threading

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    # before the heavy imports and the models load: a SIGTERM while edge starts is a clean stop, not a kill
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    hangup = threading.Event()
    signal.signal(signal.SIGHUP, lambda _signum, _frame: hangup.set())
    from edge.daemon import run as run_daemon

    _setup_logging(verbose)
    from edge.credentials import config_fingerprint, with_mqtt_password

    def reload() -> Any:
        """After SIGHUP: the config file again, validated whole; None (the running config stays) when it fails."""
        if not hangup.is_set():
            return None
        hangup.clear()
        import logging

        log = logging.getLogger("edge.daemon")
        if app.config_path is None:
            log.warning("SIGHUP: no config file (--config or EDGE_CONFIG) to reload")
            return None
        from edge.config import load_config

        try:
            return with_mqtt_password(load_config(app.config_path))
        except EdgeError as exc:
            log.error("SIGHUP: config reload refused, the running config stays: %s", exc)
            return None

    config = with_mqtt_password(app.config)  # from the config, mqtt.password_file or EDGE_MQTT_PASSWORD
    # config_hash is published retained: no secret in it
    run_daemon(config, stop, app.db_path, config_fingerprint(config), init, reload=reload)


@main.command()
@click.argument("video", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--camera", "camera_id", help="Take this configured camera's role and line (default: the first).")
@click.option("--start", "start", help="Wall-clock time of the first frame, ISO 8601 (default: now).")
@click.option(
    "--every-frame/--camera-rate", default=True, help="Process every frame (default) or the camera's max_fps."
)
@click.option("-v", "--verbose", is_flag=True, help="Log the pipeline's progress.")
@pass_app
def replay(
    app: AppContext, video: Path, camera_id: Optional[str], start: Optional[str], every_frame: bool, verbose: bool
) -> None:
    """Run the whole pipeline on a recording, on its own timeline: events printed as JSON lines and stored."""
    from datetime import datetime

    from edge.daemon import replay as run_replay
    from edge.store import event_to_dict

    if verbose:
        _setup_logging(True)
    tz = app.config.device.tz
    try:
        begin = datetime.fromisoformat(start) if start else datetime.now(tz)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {start!r}", param_hint="--start") from None
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=tz)

    def show(event: Any, latency: float) -> None:
        record = event_to_dict(event)
        record["latency_s"] = round(latency, 3)
        click.echo(json.dumps(record, ensure_ascii=False))

    pipeline = run_replay(app.config, video, camera_id, begin, every_frame, app.db_path, on_event=show)
    for cam, stats in pipeline.stats.items():
        frames = max(stats.frames, 1)
        click.echo(
            f"replay {cam}: {stats.frames} frames, {stats.faces} faces, {stats.embeddings} embeddings, "
            f"detect {stats.detect_ms / frames:.1f} ms/frame, rejections {dict(stats.rejections)}",
            err=True,
        )


# events --------------------------------------------------------------------------------------------------------
@main.group()
def events() -> None:
    """List and export the attendance events stored on this box."""


def _event_filters(since: Optional[str], until: Optional[str], tz: Any) -> tuple:  # type: ignore[type-arg]
    from datetime import datetime, timedelta

    def parse(value: Optional[str], name: str, default: datetime) -> datetime:
        if not value:
            return default
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f"not an ISO 8601 date or time: {value!r}", param_hint=name) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=tz)

    start = parse(since, "--since", datetime(1970, 1, 2, tzinfo=tz))
    end = parse(until, "--until", datetime.now(tz) + timedelta(days=3650))
    if until and len(until) == 10:  # a bare date means the whole day
        end += timedelta(days=1)
    return start, end


_event_options = [
    click.option("--since", help="From this date or time (ISO 8601, site time zone)."),
    click.option("--until", help="Up to this date (inclusive) or time."),
    click.option("--person", "person_id", help="Only this person."),
    click.option("--type", "types", multiple=True, help="Only these event types (repeatable): entry, exit, late..."),
]


def event_options(fn: Any) -> Any:
    for option in reversed(_event_options):
        fn = option(fn)
    return fn


def _query(
    app: AppContext, since: Optional[str], until: Optional[str], person_id: Optional[str], types: Sequence[str]
) -> list:  # type: ignore[type-arg]
    from edge.attendance import EventType
    from edge.store import EventStore

    valid = {t.value for t in EventType}
    bad = [t for t in types if t not in valid]
    if bad:
        raise click.BadParameter(f"unknown type {bad[0]!r}; one of {', '.join(sorted(valid))}", param_hint="--type")
    start, end = _event_filters(since, until, app.config.device.tz)
    app.require_database()
    store = app.stack.enter_context(EventStore(app.db_path, app.config.device.id))
    return store.events_between(start, end, person_id=person_id, types=[EventType(t) for t in types] or None)


@events.command("list")
@event_options
@pass_app
def events_list(
    app: AppContext, since: Optional[str], until: Optional[str], person_id: Optional[str], types: Sequence[str]
) -> None:
    """Stored events, oldest first, one line each."""
    rows = _query(app, since, until, person_id, types)
    for e in rows:
        ev = e.event
        click.echo(
            f"{e.event_id}  {ev.at.isoformat(timespec='seconds')}  {ev.type.value:<12} "
            f"{ev.person_id or '-':<16} {ev.camera_id}  score {ev.score:.3f}"
        )
    click.echo(f"{len(rows)} events", err=True)


@events.command("export")
@event_options
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default="-",
    help="File to write (default: stdout).",
)
@pass_app
def events_export(
    app: AppContext,
    since: Optional[str],
    until: Optional[str],
    person_id: Optional[str],
    types: Sequence[str],
    fmt: str,
    output: Path,
) -> None:
    """Export stored events as CSV or JSON (date range, person, type)."""
    from edge.store import export_csv, export_json

    rows = _query(app, since, until, person_id, types)
    writer = export_csv if fmt == "csv" else export_json
    if str(output) == "-":
        writer(rows, sys.stdout)
    else:
        import os

        try:  # attendance is personal data: owner-only, like the database (also when the file existed)
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer(rows, handle)
        click.echo(f"{len(rows)} events written to {output}", err=True)


def _register_central() -> None:
    from edge.central.cli import central
    from edge.mqtt.broker_cli import broker

    main.add_command(central)
    main.add_command(broker)


_register_central()


def _register_ops() -> None:
    from edge.ops.cli import doctor, status

    main.add_command(status)
    main.add_command(doctor)


_register_ops()
