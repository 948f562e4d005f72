"""The day's attendance report by e-mail: one message per recipient group, the report attached as CSV or XLSX,
sent over SMTP with TLS (STARTTLS or implicit TLS, never in the clear), the password read from a private file.

    config = load_mail_config(Path("/etc/edge/mail.yml"))
    sent = send_day(config, CentralStore("central.db"), date(2026, 3, 2))   # [Sent(...)] for each group's message

The schedule is a systemd timer (systemd/edge-central-mail.timer runs `edge central mail` daily at 18:00, and
catches up after the central was down): a one-shot command needs no thread in the server and no clock of its own.
Each (day, recipient group) is recorded in the central's file (table mail_sent, migrations "edge.central.mail")
once its message was accepted by the SMTP server, so a run again the same day sends nothing twice (unless
`force`).

The config file (YAML, unknown keys are errors):

    smtp:
      host: smtp.example.org
      port: 587
      security: starttls          # or tls (implicit TLS, port 465)
      ca_file: null               # PEM of the CA to trust instead of the system's (a private mail server)
      username: attendance@example.org
      password_file: /etc/edge/smtp.password   # mode 0600, the password on one line
    sender: attendance@example.org
    format: xlsx                  # or csv
    recipients:                   # a group's report to its addresses; "*" gets every group's rows
      "*": [office@example.org]
      1A: [teacher-1a@example.org]
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

from edge.central.backend import Ddl, Schema
from edge.central.store import CentralStore
from edge.errors import ConfigError, EdgeError

log = logging.getLogger("edge.central.mail")
migrations = Schema("edge.central.mail")
EVERYONE = "*"
"""The recipients key whose addresses get the whole report (every group's rows)."""
MAX_CONFIG_BYTES = 64 * 1024


@migrations()
def m001_mail_sent(db: Ddl) -> None:
    db.execute(
        """
        CREATE TABLE mail_sent (
            day TEXT NOT NULL,
            recipient_group TEXT NOT NULL,
            recipients TEXT NOT NULL,
            format TEXT NOT NULL,
            rows INTEGER NOT NULL,
            message_id TEXT NOT NULL,
            sent_at TEXT NOT NULL,
            PRIMARY KEY (day, recipient_group)
        )
        """
    )


class MailError(EdgeError):
    """The report could not be mailed: the SMTP server is unreachable, refuses TLS or the login, or a recipient."""


def check_address(address: str, what: str) -> str:
    """A plain address (local@domain): no display name, no line breaks (a header could be injected through them)."""
    name, plain = parseaddr(address)
    if name or plain != address or address.count("@") != 1 or any(c in address for c in "\r\n\t ,;<>"):
        raise ValueError(f"{what} must be one plain address such as office@example.org, got {address!r}")
    local, domain = address.split("@")
    if not local or not domain:
        raise ValueError(f"{what} must be one plain address such as office@example.org, got {address!r}")
    return address


@dataclass(frozen=True)
class SmtpConfig:
    """The SMTP server that sends the report: always under TLS, with a login when username is given."""

    host: str
    port: int = 587
    security: Literal["starttls", "tls"] = "starttls"
    """starttls: upgrade a plain connection (port 587), refusing a server without STARTTLS; tls: TLS from the first
    byte (port 465)."""
    ca_file: Optional[Path] = None
    """PEM of the CA that signed the server's certificate (None: the system's CAs). The host name is checked."""
    username: Optional[str] = None
    password_file: Optional[Path] = None
    """File holding the password on one line, not readable by everyone (like mqtt.password_file)."""
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() or c in "/:@" for c in self.host):
            raise ValueError(f"host must be a host name or IPv4 address, got {self.host!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be within 1..65535, got {self.port}")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"ca_file {self.ca_file} is not a file")
        if not 1 <= self.timeout_s <= 600:
            raise ValueError(f"timeout_s must be within 1..600, got {self.timeout_s}")


@dataclass(frozen=True)
class MailConfig:
    """Who gets the day's report, in which format, through which server."""

    smtp: SmtpConfig
    sender: str
    recipients: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    """Group -> addresses; the group "*" gets every group's rows."""
    format: Literal["csv", "xlsx"] = "csv"
    subject: str = "Attendance {date}{group}"
    """{date}: the day (YYYY-MM-DD); {group}: " - <group>" for a group's report, empty for "*"."""

    def __post_init__(self) -> None:
        check_address(self.sender, "sender")
        if not self.recipients or not any(self.recipients.values()):
            raise ValueError("recipients must name at least one group with an address")
        for group, addresses in self.recipients.items():
            for address in addresses:
                check_address(address, f"recipients.{group}")
        if any(c in self.subject for c in "\r\n"):
            raise ValueError("subject must be one line")
        try:
            self.subject.format(date="2026-01-01", group="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"subject may use {{date}} and {{group}} only ({exc})") from None


def load_mail_config(path: Path) -> MailConfig:
    """Read and validate the mail config (every error names its key and line)."""
    from edge.config.tree import load_yaml_tree

    try:
        data = path.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the mail config ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES // 1024} KiB: not a mail config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return load_yaml_tree(MailConfig, text, str(path))


# the messages (pure) ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Report:
    """One group's report of one day, ready to mail."""

    day: date
    group: str
    """A group name, or "*" for everyone."""
    recipients: Tuple[str, ...]
    attachment: bytes
    rows: int
    summary: str


def summary_of(statuses: Sequence[str]) -> str:
    """"present 20, late 2, absent 1" in the report's order of statuses."""
    counts = Counter(statuses)
    order = ("present", "late", "left_early", "absent", "excused")
    parts = [f"{s.replace('_', ' ')} {counts[s]}" for s in order if counts[s]]
    parts += [f"{s} {n}" for s, n in sorted(counts.items()) if s not in order]
    return ", ".join(parts) or "no one expected"


def attachment_name(day: date, group: str, fmt: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in group)
    return f"attendance-{day.isoformat()}{'' if group == EVERYONE else '-' + safe}.{fmt}"


def message_of(config: MailConfig, report: Report) -> EmailMessage:
    from edge.central.export import MEDIA_TYPES

    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = ", ".join(report.recipients)
    group = "" if report.group == EVERYONE else f" - {report.group}"
    message["Subject"] = config.subject.format(date=report.day.isoformat(), group=group)
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain=config.sender.split("@")[1])
    who = "every group" if report.group == EVERYONE else f"group {report.group}"
    message.set_content(
        f"Attendance of {report.day.isoformat()} ({who}): {report.summary}.\n\n"
        f"{report.rows} rows (one per person and session) in the attached {config.format.upper()} file.\n"
        "Sent by edge central mail.\n"
    )
    maintype, subtype = MEDIA_TYPES[config.format].split(";")[0].split("/")
    message.add_attachment(
        report.attachment, maintype=maintype, subtype=subtype,
        filename=attachment_name(report.day, report.group, config.format),
    )  # fmt: skip
    return message


# sending (I/O) ------------------------------------------------------------------------------------------------------
def _password(smtp: SmtpConfig) -> Optional[str]:
    if smtp.password_file is None:
        return None
    from edge.credentials import read_password_file

    return read_password_file(smtp.password_file, "smtp.password_file")


def _connect(smtp: SmtpConfig) -> smtplib.SMTP:
    context = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
    where = f"{smtp.host}:{smtp.port}"
    try:
        if smtp.security == "tls":
            return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        client.ehlo()
        if not client.has_extn("starttls"):
            client.close()
            raise MailError(f"the SMTP server at {where} does not offer STARTTLS: the report is never sent in the clear")
        client.starttls(context=context)
        client.ehlo()
        return client
    except ssl.SSLError as exc:
        raise MailError(f"TLS with the SMTP server at {where} failed ({exc.reason or exc}); check smtp.ca_file") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"cannot reach the SMTP server at {where} ({exc})") from None


def send_messages(smtp: SmtpConfig, messages: Sequence[EmailMessage]) -> None:
    """Send every message over one TLS connection, logging in first when a username is given."""
    password = _password(smtp)
    client = _connect(smtp)
    try:
        if smtp.username is not None:
            try:
                client.login(smtp.username, password or "")
            except smtplib.SMTPException as exc:
                raise MailError(f"the SMTP server at {smtp.host}:{smtp.port} refused the login ({exc})") from None
        for message in messages:
            try:
                client.send_message(message)
            except smtplib.SMTPException as exc:
                raise MailError(f"the SMTP server refused the message to {message['To']} ({exc})") from None
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


@dataclass(frozen=True)
class Sent:
    """What send_day did for one recipient group: sent (with its message id) or skipped (sent before)."""

    group: str
    recipients: Tuple[str, ...]
    rows: int
    message_id: Optional[str]
    skipped: bool = False


def reports_of(config: MailConfig, store: CentralStore, day: date) -> List[Report]:
    """Each recipient group's report of `day` (edge.central.office), as the configured file format."""
    from edge.central import export
    from edge.central.office import Office

    office = Office(store)
    out = []
    for group, addresses in config.recipients.items():
        if not addresses:
            continue
        rows = office.report(day, group=None if group == EVERYONE else group)
        out.append(
            Report(day, group, tuple(addresses), export.write(rows, config.format), len(rows),
                   summary_of([r.status for r in rows]))
        )  # fmt: skip
    return out


def already_sent(store: CentralStore, day: date) -> Dict[str, str]:
    """Groups whose report of `day` was sent: group -> message id."""
    store.backend.apply(migrations)
    rows = store.backend.query("SELECT recipient_group, message_id FROM mail_sent WHERE day = ?", [day.isoformat()])
    return {r[0]: r[1] for r in rows}


def _record(store: CentralStore, config: MailConfig, report: Report, message_id: str) -> None:
    with store.backend.transaction() as tx:
        tx.execute(
            "INSERT INTO mail_sent (day, recipient_group, recipients, format, rows, message_id, sent_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, recipient_group) DO UPDATE SET "
            "recipients = excluded.recipients, format = excluded.format, rows = excluded.rows, "
            "message_id = excluded.message_id, sent_at = excluded.sent_at",
            [report.day.isoformat(), report.group, ", ".join(report.recipients), config.format, report.rows,
             message_id, datetime.now(timezone.utc).isoformat(timespec="seconds")],
        )  # fmt: skip


def send_day(config: MailConfig, store: CentralStore, day: date, force: bool = False) -> List[Sent]:
    """Mail the report of `day` to every recipient group not yet sent that day (all of them with `force`);
    each group is recorded as sent once the SMTP server accepted its message."""
    store.backend.apply(migrations)
    done = {} if force else already_sent(store, day)
    out: List[Sent] = []
    for report in reports_of(config, store, day):
        if report.group in done:
            out.append(Sent(report.group, report.recipients, report.rows, done[report.group], skipped=True))
            continue
        message = message_of(config, report)
        send_messages(config.smtp, [message])
        _record(store, config, report, str(message["Message-ID"]))
        log.info("mailed the report of %s (%s, %d rows) to %s", day, report.group, report.rows, message["To"])
        out.append(Sent(report.group, report.recipients, report.rows, str(message["Message-ID"])))
    return out
