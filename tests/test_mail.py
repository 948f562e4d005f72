"""The day's report by e-mail (`edge central mail`) against a real local SMTP server (Debian's aiosmtpd, started by
the test with a certificate made here): STARTTLS and implicit TLS, AUTH, the received message and its attachment's
rows; never sent in the clear, never twice the same day, one-line errors."""

from __future__ import annotations

import csv
import email
import io
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from support import REPO, free_port

from edge.central.export import COLUMNS
from edge.central.mail import MailConfig, SmtpConfig, load_mail_config, send_day
from edge.central.office import Office, Person
from edge.central.store import CentralStore
from edge.central.timetable import load_timetable
from edge.cli import main
from edge.errors import ConfigError, EdgeError

SYSTEM_PYTHON = "/usr/bin/python3"
KST = timezone(timedelta(hours=9))
DAY = date(2025, 3, 4)  # a Tuesday
TIMETABLE = 'timezone: Asia/Seoul\nsessions:\n  - {name: morning, start: "09:00", end: "12:00"}\n'
USER, PASSWORD = "office", "s3cret-Smtp"


def aiosmtpd_unavailable() -> str:
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import aiosmtpd"], capture_output=True)
    return "" if done.returncode == 0 else "python3-aiosmtpd missing: run scripts/install_system_deps.sh as root"


def make_certificate(folder: Path) -> Tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (it is its own CA), and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test smtp")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp.pem", folder / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@dataclass
class SmtpServer:
    port: int
    mode: str
    ca_file: Path
    out: Path
    proc: subprocess.Popen[str]

    def received(self) -> List[Tuple[EmailMessage, Dict[str, Any]]]:
        """Every message the server accepted, with its envelope facts, in order."""
        out = []
        for eml in sorted(self.out.glob("*.eml")):
            message = email.message_from_bytes(eml.read_bytes(), policy=default_policy)
            assert isinstance(message, EmailMessage)
            out.append((message, json.loads(eml.with_suffix(".json").read_text())))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def smtp_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """The real SMTP server in the mode the test asks for (indirect parameter: starttls, tls or plain)."""
    reason = aiosmtpd_unavailable()
    if reason:
        pytest.skip(reason)
    mode = getattr(request, "param", "starttls")
    cert, key = make_certificate(tmp_path)
    secret = tmp_path / "server.password"
    secret.write_text(PASSWORD)
    port = free_port()
    args = [SYSTEM_PYTHON, str(REPO / "tests" / "smtp_server.py"), "--port", str(port), "--mode", mode,
            "--cert", str(cert), "--key", str(key), "--user", USER, "--password-file", str(secret),
            "--out", str(tmp_path / "received")]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"the SMTP server did not start: {line} {proc.stderr.read() if proc.stderr else ''}")
    server = SmtpServer(port, mode, cert, tmp_path / "received", proc)
    try:
        yield server
    finally:
        server.stop()


def _event(seq: int, person: str, kind: str, clock: str) -> Dict[str, Any]:
    at = datetime.combine(DAY, datetime.strptime(clock, "%H:%M").time(), tzinfo=KST)
    return {"event_id": f"box-1-{'e' * 16}-{seq:010d}", "epoch": "e" * 16, "seq": seq, "prev_seq": None,
            "device_id": "box-1", "site": "s", "type": kind, "person_id": person, "camera_id": "door",
            "at": at.isoformat()}  # fmt: skip


@pytest.fixture
def central_db(tmp_path: Path) -> Path:
    """A central with a roster of three in two groups and one morning: Lin-Manuel late, Ana on time, Kim absent."""
    path = tmp_path / "central.db"
    store = CentralStore(path)
    office = Office(store)
    office.put_timetable(load_timetable(TIMETABLE, "t.yml"))
    office.put_person(Person("lin", "Lin-Manuel Miranda", "3A"))
    office.put_person(Person("ana", "Ana Lucía", "3A"))
    office.put_person(Person("kim", "Kim Minji", "3B"))
    for seq, (who, kind, clock) in enumerate([("ana", "entry", "08:50"), ("lin", "entry", "09:12")], start=1):
        store.add_event("s", _event(seq, who, kind, clock))
    store.close()
    return path


def write_mail_config(folder: Path, server: SmtpServer, fmt: str = "csv", password: str = PASSWORD) -> Path:
    secret = folder / "smtp.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    port = 465 if server.mode == "tls" else 587
    config = folder / "mail.yml"
    config.write_text(
        f"smtp:\n  host: 127.0.0.1\n  port: {server.port}  # {port} in real life\n"
        f"  security: {'tls' if server.mode == 'tls' else 'starttls'}\n  ca_file: {server.ca_file}\n"
        f"  username: {USER}\n  password_file: {secret}\n"
        f"sender: attendance@school.example\nformat: {fmt}\n"
        "recipients:\n  '*': [office@school.example]\n  3A: [teacher-3a@school.example, head@school.example]\n"
    )
    return config


def run_mail(*args: str) -> Any:
    return CliRunner().invoke(main, ["central", "mail", *args])


def attachment_of(message: EmailMessage) -> Tuple[str, bytes]:
    parts = list(message.iter_attachments())
    assert len(parts) == 1
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return str(parts[0].get_filename()), payload


def csv_rows(data: bytes) -> List[List[str]]:
    text = data.decode("utf-8")
    assert text.startswith("\ufeff")  # spreadsheet programs then read the names right
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))


def test_the_days_report_arrives_over_starttls_with_its_csv_rows(
    smtp_server: SmtpServer, central_db: Path, tmp_path: Path
) -> None:
    config = write_mail_config(tmp_path, smtp_server)
    done = run_mail("--config", str(config), "--db", str(central_db), "--date", DAY.isoformat())
    assert done.exit_code == 0, done.output
    assert "2025-03-04 *: 3 rows mailed to office@school.example" in done.output
    assert "2025-03-04 3A: 2 rows mailed to teacher-3a@school.example, head@school.example" in done.output
    received = smtp_server.received()
    assert len(received) == 2
    everyone, group = received
    for message, envelope in received:
        assert envelope["tls"] is True and envelope["login"] == USER  # under TLS, logged in
        assert envelope["mail_from"] == "attendance@school.example" and message["From"] == "attendance@school.example"
    assert everyone[1]["rcpt_tos"] == ["office@school.example"]
    assert group[1]["rcpt_tos"] == ["teacher-3a@school.example", "head@school.example"]
    assert everyone[0]["Subject"] == "Attendance 2025-03-04" and group[0]["Subject"] == "Attendance 2025-03-04 - 3A"
    body = everyone[0].get_body(("plain",))
    assert body is not None and "present 1, late 1, absent 1" in body.get_content()
    name, data = attachment_of(everyone[0])
    assert name == "attendance-2025-03-04.csv"
    table = csv_rows(data)
    assert table[0] == list(COLUMNS)
    assert [r[:10] for r in table[1:]] == [
        ["2025-03-04", "ana", "Ana Lucía", "3A", "morning", "present", "08:50", "", "0", "0"],
        ["2025-03-04", "lin", "Lin-Manuel Miranda", "3A", "morning", "late", "09:12", "", "12", "0"],
        ["2025-03-04", "kim", "Kim Minji", "3B", "morning", "absent", "", "", "0", "0"],
    ]
    name, data = attachment_of(group[0])
    assert name == "attendance-2025-03-04-3A.csv"
    assert [r[1] for r in csv_rows(data)[1:]] == ["ana", "lin"]  # the group's rows only

    again = run_mail("--config", str(config), "--db", str(central_db), "--date", DAY.isoformat())
    assert again.exit_code == 0 and "already sent" in again.output
    assert len(smtp_server.received()) == 2  # the timer may run twice a day: nothing is sent twice
    forced = run_mail("--config", str(config), "--db", str(central_db), "--date", DAY.isoformat(), "--force")
    assert forced.exit_code == 0 and len(smtp_server.received()) == 4


@pytest.mark.parametrize("smtp_server", ["tls"], indirect=True)
def test_implicit_tls_and_an_xlsx_attachment(smtp_server: SmtpServer, central_db: Path, tmp_path: Path) -> None:
    config = load_mail_config(write_mail_config(tmp_path, smtp_server, fmt="xlsx"))
    store = CentralStore(central_db)
    try:
        sent = send_day(config, store, DAY)
    finally:
        store.close()
    assert [(s.group, s.rows, s.skipped) for s in sent] == [("*", 3, False), ("3A", 2, False)]
    (message, envelope), _ = smtp_server.received()
    assert envelope["tls"] is True and envelope["login"] == USER
    assert message["Message-ID"] == sent[0].message_id
    name, data = attachment_of(message)
    assert name == "attendance-2025-03-04.xlsx"
    parts = list(message.iter_attachments())
    assert parts[0].get_content_type() == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = load_workbook(io.BytesIO(data)).active
    assert sheet is not None
    cells = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert cells[0] == list(COLUMNS)
    assert [(r[1], r[5], r[8]) for r in cells[1:]] == [("ana", "present", 0), ("lin", "late", 12), ("kim", "absent", 0)]


@pytest.mark.parametrize("smtp_server", ["plain"], indirect=True)
def test_a_server_without_tls_gets_nothing(smtp_server: SmtpServer, central_db: Path, tmp_path: Path) -> None:
    config = write_mail_config(tmp_path, smtp_server)
    done = run_mail("--config", str(config), "--db", str(central_db), "--date", DAY.isoformat())
    assert done.exit_code == 1
    assert done.output.count("\n") == 1 and "does not offer STARTTLS" in done.output, done.output
    assert smtp_server.received() == []


def test_a_wrong_password_or_an_untrusted_certificate_is_one_clear_line(
    smtp_server: SmtpServer, central_db: Path, tmp_path: Path
) -> None:
    config = write_mail_config(tmp_path, smtp_server, password="wrong")
    done = run_mail("--config", str(config), "--db", str(central_db), "--date", DAY.isoformat())
    assert done.exit_code == 1 and "refused the login" in done.output and done.output.count("\n") == 1, done.output
    assert "wrong" not in done.output
    untrusted = write_mail_config(tmp_path, smtp_server)
    untrusted.write_text("\n".join(x for x in untrusted.read_text().splitlines() if "ca_file" not in x) + "\n")
    done = run_mail("--config", str(untrusted), "--db", str(central_db), "--date", DAY.isoformat())
    assert done.exit_code == 1 and "TLS with the SMTP server" in done.output, done.output
    assert smtp_server.received() == []
    store = CentralStore(central_db)
    try:  # nothing recorded as sent: the next run tries again
        rows = store.db.conn.execute("SELECT count(*) FROM mail_sent").fetchone()[0]
    finally:
        store.close()
    assert rows == 0


def test_the_mail_config_is_checked(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    os.chmod(secret, 0o644)
    smtp = SmtpConfig(host="127.0.0.1", username="u", password_file=secret)
    with pytest.raises(ValueError, match="plain address"):
        MailConfig(smtp, sender="Office <office@x.org>", recipients={"*": ("a@x.org",)})
    with pytest.raises(ValueError, match="plain address"):
        MailConfig(smtp, sender="office@x.org", recipients={"*": ("a@x.org\r\nBcc: evil@y.org",)})
    with pytest.raises(ValueError, match="at least one"):
        MailConfig(smtp, sender="office@x.org", recipients={})
    with pytest.raises(ValueError, match="go together"):
        SmtpConfig(host="127.0.0.1", username="u")
    bad = tmp_path / "mail.yml"
    bad.write_text("smtp: {host: 127.0.0.1, security: none}\nsender: a@x.org\nrecipients: {'*': [b@x.org]}\n")
    with pytest.raises(ConfigError, match=r"smtp.security \(line 1\): must be one of 'starttls', 'tls'"):
        load_mail_config(bad)
    config = MailConfig(smtp, sender="office@x.org", recipients={"*": ("a@x.org",)})
    store = CentralStore(tmp_path / "central.db")
    try:
        with pytest.raises(EdgeError, match="readable by everyone"):  # the password file must be private
            send_day(config, store, DAY)
    finally:
        store.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found (Debian package systemd)")
def test_the_daily_timer_and_its_service_verify(tmp_path: Path) -> None:
    """systemd is not PID 1 here: the units are checked offline, ExecStart pointed at this environment's edge."""
    installed = "/opt/edge/venv/bin/edge"
    service = (REPO / "systemd" / "edge-central-mail.service").read_text()
    assert f"{installed} central mail --config" in service
    (tmp_path / "edge-central-mail.service").write_text(service.replace(installed, str(Path(sys.executable).parent / "edge")))
    timer = (REPO / "systemd" / "edge-central-mail.timer").read_text()
    assert "OnCalendar=*-*-* 18:00:00" in timer and "Persistent=true" in timer
    (tmp_path / "edge-central-mail.timer").write_text(timer)
    units = [str(tmp_path / "edge-central-mail.timer"), str(tmp_path / "edge-central-mail.service")]
    done = subprocess.run(["systemd-analyze", "verify", *units],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
