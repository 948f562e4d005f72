"""`edge central mail`: the day's report by e-mail, a one-shot for a systemd timer (edge.central.mail)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Optional

import click

from edge.central.backend import TARGET_HELP, StoreTarget


@click.command("mail")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The mail config (YAML): SMTP server and TLS, password file, sender, recipients per group, format.",
)
@click.option(
    "--db",
    type=StoreTarget(exists=True),
    default="central.db",
    show_default=True,
    help=f"The central's store (written by `edge central run`): {TARGET_HELP}.",
)
@click.option("--date", "day", help="The day to report, YYYY-MM-DD; default: today in the timetable's time zone.")
@click.option("--force", is_flag=True, help="Mail again the groups whose report of that day was already sent.")
def mail(config_path: Path, db: str, day: Optional[str], force: bool) -> None:
    """Mail the day's attendance report (CSV or XLSX attached) to each recipient group, over SMTP with STARTTLS or
    TLS. A group already mailed that day is skipped, so the daily timer (systemd/edge-central-mail.timer) may run
    it again safely."""
    from edge.central.mail import load_mail_config, send_day
    from edge.central.office import Office
    from edge.central.store import CentralStore

    config = load_mail_config(config_path)
    store = CentralStore(db)
    try:
        if day is None:
            the_day = datetime.now(Office(store).timetable().tz).date()
        else:
            try:
                the_day = date.fromisoformat(day)
            except ValueError:
                raise click.BadParameter(f"{day!r} is not a date YYYY-MM-DD", param_hint="--date") from None
        sent = send_day(config, store, the_day, force=force)
    finally:
        store.close()
    for item in sent:
        to = ", ".join(item.recipients)
        if item.skipped:
            click.echo(f"{the_day} {item.group}: already sent ({item.message_id}); --force sends it again")
        else:
            click.echo(f"{the_day} {item.group}: {item.rows} rows mailed to {to}")
