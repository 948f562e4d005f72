"""The web console over HTTP (Starlette's TestClient on a real SQLite file): who may see and do what, CSRF, sessions
that expire, cookie and header attributes, the user commands, and that no page shows an embedding. One boundary test
serves the real `edge central console` over HTTPS."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, List

import pytest

pytest.importorskip("starlette", reason="the console needs the central extra: pip install .[central]")

from click.testing import CliRunner  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from edge.central.cli import central as central_cli  # noqa: E402
from edge.central.office import Person  # noqa: E402
from edge.central.store import CentralStore  # noqa: E402
from edge.central.timetable import load_timetable  # noqa: E402
from edge.central.users import UserError, Users  # noqa: E402
from edge.central.web.app import create_app  # noqa: E402
from edge.central.web.context import Console  # noqa: E402
from tests.central_box import event  # noqa: E402
from tests.support import REPO, Mosquitto, free_port, mosquitto_unavailable, wait_until  # noqa: E402

START = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)  # Monday 17:30 in Seoul
TIMETABLE = 'timezone: Asia/Seoul\nsessions:\n  - {name: day, start: "09:00", end: "18:00"}\n'
ADMIN_PW, STAFF_PW = "admin passphrase 1", "staff passphrase 1"
TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def console(tmp_path: Path, clock: Clock) -> Iterator[Console]:
    store = CentralStore(tmp_path / "central.db")
    made = Console(store, clock=clock)
    made.users.add("ada", ADMIN_PW, "admin", START)
    made.users.add("sam", STAFF_PW, "staff", START)
    made.office.put_person(Person("lin-manuel", "Lin-Manuel Miranda", "cast"))
    made.office.put_person(Person("kim", "Kim Minji", "cast"))
    made.office.put_timetable(load_timetable(TIMETABLE, "timetable.yml"))
    try:
        yield made
    finally:
        store.close()


def client(console: Console) -> TestClient:
    return TestClient(create_app(console), follow_redirects=False)


def log_in(web: TestClient, username: str, password: str) -> str:
    """Log in through the form; returns the session's CSRF token (from the board)."""
    form = web.get("/login")
    token = TOKEN.search(form.text)
    assert token is not None
    answer = web.post("/login", data={"username": username, "password": password, "csrf": token.group(1), "next": "/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
    board = web.get("/")
    assert board.status_code == 200
    found = TOKEN.search(board.text)
    assert found is not None
    return found.group(1)


STAFF_PAGES = ["/", "/board/live", "/person/kim", "/report", "/report.csv", "/report.xlsx", "/report.json",
               "/unknown", "/health"]  # fmt: skip
ADMIN_PAGES = ["/gallery"]
ADMIN_POSTS = ["/gallery/add", "/gallery/kim/group", "/gallery/kim/remove", "/unknown/e1/enroll"]
STAFF_POSTS = ["/correct", "/unknown/e1/label", "/logout"]


# users ---------------------------------------------------------------------------------------------------------------
def test_passwords_are_kept_as_argon2_hashes_and_checked(console: Console) -> None:
    users = console.users
    [stored] = console.store.db.conn.execute(
        "SELECT password_hash FROM console_users WHERE username = 'ada'"
    ).fetchone()
    assert stored.startswith("$argon2id$") and ADMIN_PW not in stored
    assert users.check_password("ada", ADMIN_PW) == users.get("ada")
    assert users.check_password("ada", "wrong passphrase") is None
    assert users.check_password("nobody", ADMIN_PW) is None
    with pytest.raises(UserError, match="10 to 1024 characters"):
        users.add("bob", "short", "staff", START)
    with pytest.raises(UserError, match="role must be staff or admin"):
        users.add("bob", "long enough pass", "root", START)
    with pytest.raises(UserError, match="exists"):
        users.add("ada", "long enough pass", "staff", START)
    with pytest.raises(UserError, match="user name"):
        users.add("Bob Smith", "long enough pass", "staff", START)


# who may see what ----------------------------------------------------------------------------------------------------
def test_unauthenticated_requests_go_to_the_login_page_or_are_refused(console: Console) -> None:
    web = client(console)
    for path in STAFF_PAGES + ADMIN_PAGES + ["/crop/e1"]:
        answer = web.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next="), path
    for path in STAFF_POSTS + ADMIN_POSTS:
        answer = web.post(path, data={"csrf": "x", "person_id": "kim", "date": "2026-03-02", "kind": "excused",
                                      "why": "note"})  # fmt: skip
        assert answer.status_code == 401, path
    assert console.office.corrections(date(2026, 3, 2)) == []
    assert web.get("/static/console.css").status_code == 200
    assert web.get("/login").status_code == 200


def test_staff_are_refused_on_admin_pages_and_admins_are_not(console: Console) -> None:
    staff = client(console)
    csrf = log_in(staff, "sam", STAFF_PW)
    for path in STAFF_PAGES:
        assert staff.get(path).status_code == 200, path
    for path in ADMIN_PAGES:
        answer = staff.get(path)
        assert answer.status_code == 403 and "for admins" in answer.text, path
    for path in ADMIN_POSTS:  # with a valid CSRF token: refused for the role, not the token
        answer = staff.post(path, data={"csrf": csrf, "person_id": "kim", "name": "Kim", "group": "x"})
        assert answer.status_code == 403 and "for admins" in answer.text, path
    assert console.office.person("kim") == Person("kim", "Kim Minji", "cast")
    assert "/gallery" not in staff.get("/").text  # the menu has no admin page for staff

    admin = client(console)
    csrf = log_in(admin, "ada", ADMIN_PW)
    assert admin.get("/gallery").status_code == 200
    answer = admin.post("/gallery/kim/group", data={"csrf": csrf, "group": "band"})
    assert answer.status_code == 303
    assert console.office.person("kim") == Person("kim", "Kim Minji", "band")


def test_a_post_without_the_sessions_csrf_token_is_refused(console: Console) -> None:
    web = client(console)
    csrf = log_in(web, "sam", STAFF_PW)
    other = client(console)
    other_csrf = log_in(other, "ada", ADMIN_PW)
    form = {"person_id": "kim", "date": "2026-03-02", "kind": "excused", "why": "doctor's note", "next": "/"}
    for token in (None, "", "forged", other_csrf):
        data = dict(form) if token is None else {**form, "csrf": token}
        answer = web.post("/correct", data=data)
        assert answer.status_code == 403 and "form expired" in answer.text, token
    assert console.office.corrections(date(2026, 3, 2)) == []
    answer = web.post("/correct", data={**form, "csrf": csrf})
    assert answer.status_code == 303
    [fix] = console.office.corrections(date(2026, 3, 2))
    assert (fix.person_id, fix.kind, fix.by, fix.why) == ("kim", "excused", "sam", "doctor's note")

    # the login form has its own token: a login posted from elsewhere (no cookie, or another value) is refused
    fresh = client(console)
    answer = fresh.post("/login", data={"username": "sam", "password": STAFF_PW, "csrf": "guess"})
    assert answer.status_code == 403 and "edge_console=" not in answer.headers.get("set-cookie", "")


def test_sessions_expire_when_idle_after_their_lifetime_at_logout_and_at_a_new_password(
    console: Console, clock: Clock
) -> None:
    web = client(console)
    log_in(web, "sam", STAFF_PW)
    for _ in range(3):  # requests within the idle limit keep the session alive
        clock.now += timedelta(minutes=25)
        assert web.get("/").status_code == 200
    clock.now += timedelta(minutes=31)
    answer = web.get("/report")
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Freport"

    log_in(web, "sam", STAFF_PW)
    logged_in, refused = clock.now, False
    for _ in range(30):  # busy all day: the lifetime (12 h) ends it anyway
        clock.now += timedelta(minutes=29)
        refused = web.get("/").status_code == 303
        if refused:
            break
    assert refused and timedelta(hours=12) <= clock.now - logged_in < timedelta(hours=12, minutes=29)

    csrf = log_in(web, "sam", STAFF_PW)
    cookie = web.cookies.get("edge_console")
    assert web.post("/logout", data={"csrf": csrf}).status_code == 303
    replay = client(console)
    replay.cookies.set("edge_console", str(cookie))
    assert replay.get("/").status_code == 303, "a logged-out session's cookie must open nothing"

    log_in(web, "sam", STAFF_PW)
    console.users.set_password("sam", "a new passphrase", clock.now)
    assert web.get("/").status_code == 303


def test_cookies_are_httponly_strict_and_secure_under_https_and_headers_forbid_framing(console: Console) -> None:
    web = client(console)
    form = web.get("/login")
    assert "httponly" in form.headers["set-cookie"].lower()
    token = TOKEN.search(form.text)
    assert token is not None
    answer = web.post("/login", data={"username": "sam", "password": STAFF_PW, "csrf": token.group(1)})
    cookie = answer.headers["set-cookie"].lower()
    assert "edge_console=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie  # plain HTTP on loopback: a Secure cookie would never come back
    page = web.get("/")
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store" and page.headers["x-content-type-options"] == "nosniff"

    console.secure = True
    secure = TestClient(create_app(console), base_url="https://testserver", follow_redirects=False)
    form = secure.get("/login")
    token = TOKEN.search(form.text)
    assert token is not None
    answer = secure.post("/login", data={"username": "sam", "password": STAFF_PW, "csrf": token.group(1)})
    assert "secure" in answer.headers["set-cookie"].lower()
    assert answer.headers["strict-transport-security"].startswith("max-age=")


def test_five_wrong_passwords_lock_the_name_and_next_must_stay_on_the_site(console: Console) -> None:
    web = client(console)
    for _ in range(5):
        token = TOKEN.search(web.get("/login").text)
        assert token is not None
        answer = web.post("/login", data={"username": "sam", "password": "not it at all", "csrf": token.group(1)})
        assert answer.status_code == 401 and "Wrong user name or password" in answer.text
    token = TOKEN.search(web.get("/login").text)
    assert token is not None
    answer = web.post("/login", data={"username": "sam", "password": STAFF_PW, "csrf": token.group(1)})
    assert answer.status_code == 429 and "Too many wrong passwords" in answer.text

    other = client(console)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        token = TOKEN.search(other.get("/login").text)
        assert token is not None
        answer = other.post("/login", data={"username": "ada", "password": ADMIN_PW, "csrf": token.group(1),
                                            "next": target})  # fmt: skip
        assert answer.status_code == 303 and answer.headers["location"] == "/", target


# what staff see and download ---------------------------------------------------------------------------------------
def test_an_excused_day_shows_on_the_board_and_in_the_csv_xlsx_and_json(console: Console, clock: Clock) -> None:
    from openpyxl import load_workbook

    entry = event(1, None, person_id="lin-manuel", at="2026-03-02T17:20:00+09:00")
    console.store.add_event("school-1", entry)
    web = client(console)
    csrf = log_in(web, "sam", STAFF_PW)
    day = clock.now.astimezone(console.zone()).date().isoformat()
    answer = web.post("/correct", data={"csrf": csrf, "person_id": "kim", "date": day, "kind": "excused",
                                        "why": "family visit", "next": "/person/kim"})  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == "/person/kim"
    assert "family visit" in web.get("/person/kim").text
    board = web.get(f"/board/live?date={day}").text
    assert re.search(r'data-person="kim">.*?badge excused', board, re.S)

    csv_text = web.get(f"/report.csv?date={day}").content.decode("utf-8-sig")
    lines = {line.split(",")[1]: line for line in csv_text.splitlines()[1:]}
    assert ",excused," in lines["kim"] and lines["kim"].endswith(",yes")
    sheet = load_workbook(io.BytesIO(web.get(f"/report.xlsx?date={day}").content)).active
    assert sheet is not None
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    assert rows[0][:6] == ["date", "person_id", "name", "group", "session", "status"]
    assert [r for r in rows if r[1] == "kim"][0][1:6] == ["kim", "Kim Minji", "cast", "day", "excused"]
    download = web.get(f"/report.json?date={day}")
    assert download.headers["content-disposition"] == f'attachment; filename="attendance-{day}.json"'
    assert {r["person_id"]: r["status"] for r in json.loads(download.content)["rows"]}["kim"] == "excused"


def test_no_page_shows_an_embedding(console: Console) -> None:
    vector = [round(0.01 * i, 4) for i in range(128)]
    unknown = event(2, 1, type="unknown_face", person_id=None, at="2026-03-02T17:25:00+09:00")
    console.store.add_event("school-1", {**event(1, None, person_id="kim", at="2026-03-02T17:20:00+09:00")})
    console.store.add_event("school-1", unknown)
    console.records.add_photo("kim", b"\xff\xd8\xff" + json.dumps(vector).encode(), "upload", "ada", START)
    web = client(console)
    log_in(web, "ada", ADMIN_PW)
    pages: List[str] = [web.get(p).text for p in STAFF_PAGES + ADMIN_PAGES if not p.startswith("/report.")]
    pages.append(web.get("/report.json").text)
    floats = re.compile(r"(-?\d+\.\d+\s*,\s*){8,}")
    for text in pages:
        assert not floats.search(text) and '"vector"' not in text and '"embeddings"' not in text


# the user commands ---------------------------------------------------------------------------------------------------
def test_user_commands_add_change_and_remove_users(tmp_path: Path) -> None:
    db = str(tmp_path / "central.db")
    (tmp_path / "pw").write_text("first passphrase\n")
    runner = CliRunner()
    out = runner.invoke(central_cli, ["user", "add", "--db", db, "lee", "--role", "admin", "--password-file",
                                      str(tmp_path / "pw")])  # fmt: skip
    assert out.exit_code == 0 and "added lee (admin)" in out.output, out.output
    out = runner.invoke(central_cli, ["user", "add", "--db", db, "kai"], input="second passphrase\n")
    assert out.exit_code == 0, out.output
    out = runner.invoke(central_cli, ["user", "add", "--db", db, "max"], input="short\n")
    assert out.exit_code == 1 and out.output.strip() == "Error: a password must have 10 to 1024 characters, got 5"
    assert runner.invoke(central_cli, ["user", "list", "--db", db]).output == "kai staff\nlee admin\n"
    out = runner.invoke(central_cli, ["user", "passwd", "--db", db, "kai"], input="third passphrase\n")
    assert out.exit_code == 0
    assert runner.invoke(central_cli, ["user", "role", "--db", db, "kai", "admin"]).exit_code == 0
    assert runner.invoke(central_cli, ["user", "remove", "--db", db, "lee"]).exit_code == 0
    out = runner.invoke(central_cli, ["user", "remove", "--db", db, "lee"])
    assert out.exit_code == 1 and out.output.strip() == "Error: no user 'lee'"
    store = CentralStore(db)
    try:
        users = Users(store.db)
        assert users.check_password("kai", "third passphrase") is not None
        assert [(u.username, u.role.value) for u in users.all()] == [("kai", "admin")]
    finally:
        store.close()
    for name in ("console", "user"):
        assert central_cli.commands[name].help  # type: ignore[attr-defined]


# the real command, over HTTPS ----------------------------------------------------------------------------------------
def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


def test_edge_central_console_serves_https_with_secure_cookies(tmp_path: Path) -> None:
    import httpx

    reason = mosquitto_unavailable()
    if reason:
        pytest.skip(reason)
    broker = Mosquitto(tmp_path / "broker", free_port()).start()
    cert, key = _self_signed(tmp_path)
    db = tmp_path / "central.db"
    (tmp_path / "pw").write_text(f"{STAFF_PW}\n")
    assert CliRunner().invoke(central_cli, ["user", "add", "--db", str(db), "sam", "--password-file",
                                            str(tmp_path / "pw")]).exit_code == 0  # fmt: skip
    port = free_port()
    cmd = [sys.executable, "-m", "edge", "central", "console", "--host", "127.0.0.1", "--port", str(broker.port),
           "--db", str(db), "--listen", f"127.0.0.1:{port}", "--cert", str(cert), "--key", str(key)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=str(cert), follow_redirects=False) as web:

            def up() -> bool:
                try:
                    return web.get("/login").status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_until(up, 20, 0.2), proc.stderr.read1() if proc.poll() is not None else "no answer"  # type: ignore[union-attr]
            form = web.get("/login")
            token = TOKEN.search(form.text)
            assert token is not None
            answer = web.post("/login", data={"username": "sam", "password": STAFF_PW, "csrf": token.group(1)})
            assert answer.status_code == 303
            cookie = answer.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
            assert answer.headers["strict-transport-security"].startswith("max-age=")
            assert web.get("/").status_code == 200
        with pytest.raises(httpx.TransportError):  # no plain HTTP on that port
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=3)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
        broker.kill()
    assert proc.returncode == 0, stderr
    assert "console: https://127.0.0.1:" in stderr and "console: stopped" in stderr


# enrolling an unknown face, with the MQTT side faked ------------------------------------------------------------------
class FakeCentral:
    """Records the commands pushed and answers ok; no stats."""

    def __init__(self) -> None:
        self.pushed: List[tuple] = []  # type: ignore[type-arg]

    def push(self, site: str, device: str, command: dict, timeout: float = 30.0) -> dict:  # type: ignore[type-arg]
        self.pushed.append((site, device, command))
        return {"status": "ok", "reason": f"{command['op']} done"}

    def stats_of(self, site: str, device: str) -> None:
        return None


class FakeCrops:
    def __init__(self, images: dict) -> None:  # type: ignore[type-arg]
        self.images = images

    def read(self, event_id: str) -> bytes | None:
        return self.images.get(event_id)  # type: ignore[no-any-return]


def test_enroll_this_face_sends_the_persons_photos_with_the_crop_to_online_boxes_only(console: Console) -> None:
    from edge.mqtt.contract import status_payload, validate

    fake = FakeCentral()
    face = event(2, 1, type="unknown_face", person_id=None, at="2026-03-02T17:25:00+09:00")
    console.store.add_event("school-1", face)
    console.store.put_status("school-1", "box-17", None, status_payload("box-17", "school-1", "online", "boot"))
    console.store.put_status("school-1", "box-18", None, status_payload("box-18", "school-1", "offline", "lost"))
    console.central, console.crops = fake, FakeCrops({face["event_id"]: b"\xff\xd8\xffcrop"})
    console.records.add_photo("kim", b"\xff\xd8\xffphoto", "upload", "ada", START)
    web = client(console)
    csrf = log_in(web, "ada", ADMIN_PW)
    assert 'class="enroll"' in web.get("/unknown?date=2026-03-02").text
    answer = web.post(f"/unknown/{face['event_id']}/enroll", data={"csrf": csrf, "person_id": "kim"})
    assert answer.status_code == 303, answer.text
    [(site, device, command)] = fake.pushed  # the offline box is skipped, and says so
    validate("edge.gallery_command/1", command)
    assert (site, device, command["op"]) == ("school-1", "box-17", "upsert")
    assert [base64.b64decode(p) for p in command["person"]["photos"]] == [b"\xff\xd8\xffphoto", b"\xff\xd8\xffcrop"]
    gallery = web.get("/gallery").text
    assert "school-1/box-18</td><td><span class=\"badge push-skipped\">skipped</span> box is offline" in gallery
    assert "enrolled as <b>kim</b>" in web.get("/unknown?date=2026-03-02").text
    assert web.get(f"/crop/{face['event_id']}").content == b"\xff\xd8\xffcrop"
