"""`edge central ...`: the reference central server on the command line (thin wrappers over edge.central)."""

from __future__ import annotations

import json
import signal
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import click

from edge.central.backend import TARGET_HELP, StoreTarget, is_pg_url
from edge.cligroup import EdgeGroup


def broker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--host", required=True, envvar="EDGE_CENTRAL_HOST", help="Broker host. Env: EDGE_CENTRAL_HOST."),
        click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True, help="Broker port."),
        click.option("--prefix", default="edge/v1", show_default=True, help="Topic prefix the boxes publish under."),
        click.option("--username", help="Broker user name."),
        click.option(
            "--password-file",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            envvar="EDGE_CENTRAL_PASSWORD_FILE",
            help="File whose first line is the broker password. Env: EDGE_CENTRAL_PASSWORD_FILE.",
        ),
        click.option(
            "--password",
            envvar="EDGE_CENTRAL_PASSWORD",
            help="Broker password; better from the environment, EDGE_CENTRAL_PASSWORD (on the command line every "
            "user sees it in ps), or --password-file.",
        ),
        click.option(
            "--ca-file",
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            help="Use TLS, trusting this CA certificate (PEM).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _password(broker: Dict[str, Any]) -> Optional[str]:
    """The broker password: from --password-file, the environment or (with a warning) the command line."""
    password, password_file = broker.pop("password"), broker.pop("password_file")
    if password is not None and password_file is not None:
        raise click.UsageError("give the password either in a file (--password-file) or directly, not both")
    if password_file is not None:
        try:
            lines = Path(password_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"{password_file}: cannot read the password ({exc})") from None
        if not lines or not lines[0]:
            raise click.ClickException(f"{password_file}: the first line (the password) is empty")
        return lines[0]
    source = click.get_current_context().get_parameter_source("password")
    if password is not None and source == click.core.ParameterSource.COMMANDLINE:
        click.echo(
            "warning: --password on the command line is visible to every user (ps); "
            "use --password-file or the environment variable EDGE_CENTRAL_PASSWORD",
            err=True,
        )
    return password  # type: ignore[no-any-return]


def _central(broker: Dict[str, Any], db: Any, **kwargs: Any) -> Any:
    from edge.central.server import Central
    from edge.mqtt.contract import TlsConfig

    broker["password"] = _password(broker)
    ca_file = broker.pop("ca_file")
    tls = TlsConfig(ca_file=str(ca_file)) if ca_file is not None else None
    return Central(broker.pop("host"), broker.pop("port"), db, broker.pop("prefix"), tls=tls, **broker, **kwargs)


@click.group(cls=EdgeGroup)
def central() -> None:
    """The reference central server: receive and store events, watch statuses, push gallery changes to boxes."""


@central.command()
@broker_options
@click.option(
    "--db",
    type=StoreTarget(),
    default="central.db",
    show_default=True,
    help=f"Where the received events, statuses and gallery results are kept: {TARGET_HELP} (several workers "
    "share one PostgreSQL database best).",
)
@click.option("--client-id", default="edge-central", show_default=True, help="MQTT client id (keys the session).")
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="0: one central process (MQTT 3.1.1, a persistent session). N: N worker processes sharing the boxes' "
    "messages through MQTT 5 shared subscriptions (--share-group), each storing and acknowledging in batches; one "
    "that dies is started again.",
)
@click.option(
    "--share-group",
    help="Shared-subscription group of the workers (default edge-central with --workers); workers with the same "
    "group and store, on any machine, split the work. Given alone: this process is one worker.",
)
@click.option("--worker-id", help="MQTT client id of this worker (default: host, pid and a random part).")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve the central's health (/metrics for Prometheus, /healthz) on --metrics-host:PORT.",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address of the metrics endpoint.")
@click.option("--quiet", is_flag=True, help="No line per event and status (a fleet's central prints too much).")
def run(
    db: str,
    client_id: str,
    workers: int,
    share_group: Optional[str],
    worker_id: Optional[str],
    metrics_port: Optional[int],
    metrics_host: str,
    quiet: bool,
    **broker: Any,
) -> None:
    """Receive, store and acknowledge events from every box until Ctrl-C; print one line per event and status."""
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    health = _health_server(db, metrics_host, metrics_port)
    try:
        if workers >= 2:
            _supervise(broker, db, workers, share_group or DEFAULT_GROUP, quiet, stop)
        elif workers == 1 or share_group is not None:
            _run_worker(broker, db, share_group or DEFAULT_GROUP, worker_id, quiet, stop)
        else:
            _run_central(broker, db, client_id, quiet, stop)
    finally:
        if health is not None:
            health.close()


DEFAULT_GROUP = "edge-central"


def _health_server(db: str, host: str, port: Optional[int]) -> Any:
    if port is None:
        return None
    from edge.central.health import HealthServer
    from edge.central.store import CentralStore

    server = HealthServer(CentralStore(db), host, port).start()
    click.echo(f"central: health on http://{host}:{server.port}/metrics and /healthz", err=True)
    return server


def _watch(name: str, where: str, is_connected: Callable[[], bool], stop: threading.Event) -> None:
    connected: Optional[bool] = None
    while not stop.wait(0.5):
        now = is_connected()
        if now != connected:
            click.echo(f"{name}: broker {where} " + ("connected" if now else "not reachable; retrying"), err=True)
            connected = now


def _run_central(broker: Dict[str, Any], db: str, client_id: str, quiet: bool, stop: threading.Event) -> None:
    host, port = broker["host"], broker["port"]
    notice = None if quiet else (lambda n: click.echo(n.line))
    central_ = _central(broker, db, client_id=client_id, on_notice=notice)
    try:
        central_.start()
        click.echo(f"central: listening on {host}:{port}, storing into {db}; Ctrl-C to stop", err=True)
        _watch("central", f"{host}:{port}", lambda: central_.wait_connected(0), stop)
    finally:
        central_.close()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(central_.counts().items())) or "nothing received"
    click.echo(f"central: stopped ({counts})", err=True)


def _run_worker(
    broker: Dict[str, Any], db: str, group: str, worker_id: Optional[str], quiet: bool, stop: threading.Event
) -> None:
    from edge.central.workers import Worker
    from edge.mqtt.contract import TlsConfig

    broker["password"] = _password(broker)
    ca_file = broker.pop("ca_file")
    tls = TlsConfig(ca_file=str(ca_file)) if ca_file is not None else None
    host, port = broker.pop("host"), broker.pop("port")
    on_line = None if quiet else click.echo
    worker = Worker(host, port, db, broker.pop("prefix"), group=group, worker_id=worker_id, tls=tls, on_line=on_line,
                    **broker)  # fmt: skip
    try:
        worker.start()
        click.echo(f"worker {worker.worker_id}: group {group} on {host}:{port}, storing into {db}", err=True)
        _watch(f"worker {worker.worker_id}", f"{host}:{port}", lambda: worker.connected, stop)
    finally:
        worker.close()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(worker.counts().items())) or "nothing received"
    click.echo(f"worker {worker.worker_id}: stopped ({counts})", err=True)


def _supervise(broker: Dict[str, Any], db: str, n: int, group: str, quiet: bool, stop: threading.Event) -> None:
    """N worker processes of this command (one worker each, one login shared); one that dies is started again a
    second later. A broker that keys client ids on logins (edge broker conf: use_username_as_clientid) lets one
    connection per login: there, start each worker on its own (--share-group) with a login of its own."""
    import os
    import socket
    import subprocess
    import sys

    env = dict(os.environ)
    password = _password(broker)
    if password is not None:
        env["EDGE_CENTRAL_PASSWORD"] = password  # never on a command line
    argv = [sys.executable, "-m", "edge", "central", "run", "--workers", "1", "--share-group", group, "--db", str(db),
            "--host", broker["host"], "--port", str(broker["port"]), "--prefix", broker["prefix"]]  # fmt: skip
    if broker.get("username"):
        argv += ["--username", broker["username"]]
    if broker.get("ca_file"):
        argv += ["--ca-file", str(broker["ca_file"])]
    if quiet:
        argv.append("--quiet")
    base = f"{socket.gethostname()}-{os.getpid()}"
    procs: Dict[int, Any] = {}
    click.echo(f"central: {n} workers in group {group}, storing into {db}; Ctrl-C to stop", err=True)
    try:
        while not stop.is_set():
            for i in range(n):
                proc = procs.get(i)
                if proc is not None and proc.poll() is not None:
                    click.echo(f"central: worker {base}-{i} ended ({proc.returncode}); starting it again", err=True)
                if proc is None or proc.poll() is not None:
                    procs[i] = subprocess.Popen([*argv, "--worker-id", f"{base}-{i}"], env=env)
            stop.wait(1.0)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _print_result(result: Dict[str, Any]) -> None:
    for photo in result.get("photos", []):
        detail = f" ({photo['detail']})" if photo.get("detail") else ""
        click.echo(f"  {photo.get('person_id', '')} photo {photo.get('index')}: {photo.get('outcome')}{detail}")
    people = f", {result['people']} people" if "people" in result else ""
    line = f"{result['status']}: {result['reason']} (gallery version {result['gallery_version']}{people})"
    if result["status"] != "ok":
        raise click.ClickException(line)
    click.echo(line)


def _send(broker: Dict[str, Any], target: Dict[str, Any], command: Dict[str, Any]) -> None:
    client_id = f"edge-central-cli-{uuid.uuid4().hex[:8]}"
    central_ = _central(broker, ":memory:", client_id=client_id, store_events=False, key_file=target["key_file"])
    try:
        central_.connect()
        result = central_.push(target["site"], target["device"], command, timeout=target["timeout"])
    finally:
        central_.close()
    _print_result(result)


def target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--site", required=True, help="Site of the box."),
        click.option("--device", required=True, help="Device id of the box."),
        click.option("--base-version", type=click.IntRange(min=0), help="Refuse unless the box's gallery is at this version."),
        click.option("--timeout", type=click.FloatRange(0.1, 86400), default=30.0, show_default=True,
                     help="Seconds to wait for the answer; the box refuses the command after that."),
        click.option("--key-file", required=True, envvar="EDGE_CENTRAL_KEY_FILE",
                     type=click.Path(path_type=Path, dir_okay=False, exists=True),
                     help="The central's private key (edge central keygen) that signs the command. "
                          "Env: EDGE_CENTRAL_KEY_FILE."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


@central.command()
@broker_options
@target_options
@click.option("--person-id", help="Person to add or update on the box.")
@click.option("--name", help="Display name (default: the person id).")
@click.option(
    "--photo",
    "photos",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="JPEG/PNG photo, repeatable.",
)
@click.option(
    "--file",
    "export_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Sync the box to this gallery export (edge gallery export).",
)
def push(
    site: str,
    device: str,
    base_version: Optional[int],
    timeout: float,
    key_file: Path,
    person_id: Optional[str],
    name: Optional[str],
    photos: Sequence[Path],
    export_file: Optional[Path],
    **broker: Any,
) -> None:
    """Enroll one person on a box from photos (--person-id --photo ...), or make its gallery exactly --file."""  # fmt: skip
    from edge.central.server import sync_from_export, upsert_photos
    from edge.gallery.exchange import read_document

    if export_file is not None and (person_id or photos):
        raise click.UsageError("use either --file EXPORT or --person-id ID --photo F..., not both")
    if export_file is not None:
        command = sync_from_export(read_document(export_file))
    elif person_id and photos:
        command = upsert_photos(person_id, name or person_id, list(photos), base_version=base_version)
    else:
        raise click.UsageError("give --person-id ID with at least one --photo, or --file EXPORT")
    _send(broker, {"site": site, "device": device, "timeout": timeout, "key_file": key_file}, command)


@central.command()
@broker_options
@target_options
@click.option("--person-id", required=True, help="Person to erase from the box (with every embedding).")
def remove(
    site: str, device: str, base_version: Optional[int], timeout: float, key_file: Path, person_id: str, **broker: Any
) -> None:
    """Erase one person and their embeddings from a box."""
    from edge.central.server import remove as remove_command

    target = {"site": site, "device": device, "timeout": timeout, "key_file": key_file}
    _send(broker, target, remove_command(person_id, base_version))


@central.command()
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default="central.key",
    show_default=True,
    help="Where to write the private key (mode 0600; keep it on the central only).",
)
@click.option(
    "--public-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default="central.pub",
    show_default=True,
    help="Where to write the public key (copy it to every box as mqtt.central_key_file).",
)
def keygen(key_file: Path, public_file: Path) -> None:
    """Make the Ed25519 key pair that signs gallery commands; refuses to replace existing files."""
    from edge.mqtt.signing import generate_keys

    generate_keys(key_file, public_file)
    click.echo(f"wrote {key_file} (private, keep on the central) and {public_file} (install on every box)")


@central.command()
@broker_options
@click.option("--site", required=True, help="Site of the box.")
@click.option("--device", required=True, help="Device id of the box.")
@click.option("--from", "from_seq", required=True, type=click.IntRange(1, 2**53 - 1), help="First seq to send again.")
@click.option("--epoch", help="The box's epoch (16 hex digits); default: its latest one in --db.")
@click.option(
    "--db",
    type=StoreTarget(),
    default="central.db",
    show_default=True,
    help=f"The central's store, where the box's latest epoch is found (without --epoch): {TARGET_HELP}.",
)
def resend(site: str, device: str, from_seq: int, epoch: Optional[str], db: str, **broker: Any) -> None:
    """Ask a box to send its events again from a seq on (the central lost them). The box takes one such request a
    minute and sends at most 10,000 events for it, as backlog; the running central acknowledges them."""
    from edge.central.store import CentralError, CentralStore

    if epoch is None:
        if not is_pg_url(db) and not Path(db).is_file():
            raise CentralError(f"{db}: no central database there; give the box's --epoch")
        store = CentralStore(db)
        try:
            epoch = next(iter(store.epochs(site, device)), None)
        finally:
            store.close()
        if epoch is None:
            raise CentralError(f"no epoch known for {site}/{device} in {db}; give the box's --epoch")
    central_ = _central(broker, ":memory:", client_id=f"edge-central-cli-{uuid.uuid4().hex[:8]}", store_events=False)
    try:
        central_.connect()
        central_.request_resend(site, device, from_seq, epoch)
    finally:
        central_.close()
    click.echo(f"asked {site}/{device} to send its events of epoch {epoch} again from seq {from_seq}")


@central.command()
@click.option(
    "--db",
    type=StoreTarget(exists=True),
    default="central.db",
    show_default=True,
    help=f"The central's store (written by `edge central run`): {TARGET_HELP}.",
)
@click.option("--device", help="Only this box.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the event as received).")
def events(db: str, device: Optional[str], as_json: bool) -> None:
    """List the events the central has stored, by box and seq, with how often each was delivered."""
    from edge.central.store import CentralStore

    store = CentralStore(db)
    try:
        rows = store.events(device)
    finally:
        store.close()
    for row in rows:
        if as_json:
            click.echo(json.dumps({**row["payload"], "deliveries": row["deliveries"]}, ensure_ascii=False))
        else:
            who = row["person_id"] or "unknown"
            click.echo(
                f"{row['site']}/{row['device_id']} #{row['seq']} {row['type']} {who} at {row['at']} "
                f"(deliveries {row['deliveries']})"
            )
    if not as_json:
        click.echo(f"{len(rows)} events", err=True)


@central.command()
@click.option(
    "--db",
    type=StoreTarget(exists=True),
    default="central.db",
    show_default=True,
    help=f"The central's store (written by `edge central run`): {TARGET_HELP}.",
)
def flags(db: str) -> None:
    """List what the central flagged about boxes' seqs: a new epoch (a box's database started again), a regression
    (seqs reused: that epoch is no longer acknowledged) and its requests to send events again."""
    from edge.central.store import CentralStore

    store = CentralStore(db)
    try:
        rows = store.flags()
    finally:
        store.close()
    for row in rows:
        click.echo(f"{row['at']} {row['site']}/{row['device_id']} epoch {row['epoch']} {row['kind']}: {row['detail']}")
    click.echo(f"{len(rows)} flags", err=True)


from edge.central.console import register as _register_console  # noqa: E402 (needs broker_options above)
from edge.central.office_cli import register as _register_office  # noqa: E402

_register_office(central, broker_options, target_options, _send)

_register_console(central)

from edge.central.mail_cli import mail as _mail  # noqa: E402

central.add_command(_mail)
