"""The web console in a real headless browser (Debian's chromium, driven by selenium through Debian's
chromium-driver: nothing downloads a browser) against a central fed by a real box: the daemon on the RTSP Hamilton
stream, a real mosquitto, the console with its central in this process.

One walk through the office's day: log in; review an unknown face (its crop came from the box); mark someone
excused; add Lin-Manuel with his photo (a signed upsert to the box) and see him on the board, live, within seconds of
his entry on the next replay of the clip; download the day's CSV and XLSX and check their rows; see the box and
its camera online; remove him (a signed remove) and see him gone from the box's gallery.

Screenshots of the board, the report and the unknown faces go to $EDGE_SCREENS (default: the test's tmp folder).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, List
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("starlette", reason="the console needs the central extra: pip install .[central]")
pytest.importorskip("selenium", reason="the browser tests need selenium (the dev extra)")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from edge.central.office import Person  # noqa: E402
from edge.central.server import Central  # noqa: E402
from edge.central.timetable import load_timetable  # noqa: E402
from edge.central.web.app import create_app  # noqa: E402
from edge.central.web.context import Console  # noqa: E402
from edge.gallery.store import Gallery  # noqa: E402
from tests.support import (  # noqa: E402
    CentralKeys,
    Mosquitto,
    RtspServer,
    edge_command,
    free_port,
    wait_until,
)

SITE, DEVICE, ZONE = "school", "door-box", "Asia/Seoul"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ADMIN_PW = "admin passphrase 1"


def browser_unavailable() -> str:
    for path in (CHROMIUM, DRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not installed (scripts/install_system_deps.sh installs chromium and chromium-driver)"
    return ""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium never looks for a driver or browser to download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu", "--no-first-run", "--lang=en-US"):  # fmt: skip
        options.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})  # fmt: skip
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


class ConsoleServer:
    """The console (uvicorn in a thread) over a Central connected to the broker, in this process."""

    def __init__(self, central: Central, console: Console) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(console), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ConsoleServer:
        self.thread.start()
        assert wait_until(lambda: self.server.started, 20), "the console did not start"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def timetable_for_now() -> str:
    """One session every day that started 2 minutes ago in Seoul (so an entry now is on time), for 3 hours."""
    now = datetime.now(ZoneInfo(ZONE))
    start = (now - timedelta(minutes=2)).replace(second=0, microsecond=0)
    end = min(start + timedelta(hours=3), now.replace(hour=23, minute=59, second=0, microsecond=0))
    if start.date() != now.date() or end <= now + timedelta(minutes=10):
        pytest.skip("too close to midnight in Seoul for a session around now")
    return (f"timezone: {ZONE}\nsessions:\n  - {{name: day, start: \"{start:%H:%M}\", end: \"{end:%H:%M}\", "
            f"days: [mon, tue, wed, thu, fri, sat, sun]}}\n")  # fmt: skip


def box_config(tmp_path: Path, db: Path, port: int, keys: CentralKeys, rtsp: RtspServer) -> Path:
    path = tmp_path / "edge.yml"
    path.write_text(
        f"device: {{id: {DEVICE}, site: {SITE}, timezone: {ZONE}}}\nstorage: {{database: {db}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}, reconnect_min_s: 0.2, reconnect_max_s: 1.0, stats_interval_s: 2.0, "
        f"central_key_file: {keys.public_file}}}\n"
        f"crops: {{enabled: true, upload: true, folder: {tmp_path / 'box-crops'}}}\n"
        f"cameras:\n  - {{id: door, url: '{rtsp.url}', role: entrance, max_fps: 15, open_timeout_s: 5}}\n"
    )
    return path


def shoot(driver: Any, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(800, min(int(height) + 40, 2400)))
    driver.save_screenshot(str(folder / f"{name}.png"))
    driver.set_window_size(1400, 1000)


def text_of(driver: Any, css: str) -> str:
    """The text of an element, read in one step (the board's live part is replaced every 2 s)."""
    found = driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)
    return str(found).strip()


def text_after(driver: Any, css: str, needle: str, timeout: float = 20) -> str:
    """The text of an element once it holds needle: after a click that submits a form, the old page may still be
    there for a moment (an element found on it goes stale when the answer replaces it), so read it in one step,
    again and again, until the new page says what it should (or the wait ends and the assert shows what it said)."""
    wait_until(lambda: needle in text_of(driver, css), timeout, 0.1)
    return text_of(driver, css)


def downloaded(folder: Path, suffix: str, timeout: float = 20) -> Path:
    def found() -> List[Path]:
        return [p for p in folder.glob(f"*.{suffix}")]

    assert wait_until(lambda: bool(found()), timeout, 0.2), f"no .{suffix} downloaded: {list(folder.iterdir())}"
    return found()[0]


def test_the_office_works_through_the_console_against_a_real_box(
    tmp_path: Path, data: Path, rtsp: RtspServer, broker: Mosquitto, central_keys: CentralKeys, browser: Any
) -> None:
    from openpyxl import load_workbook

    shots = Path(os.environ["EDGE_SCREENS"]) if os.environ.get("EDGE_SCREENS") else tmp_path / "screens"
    central = Central("127.0.0.1", broker.port, tmp_path / "central.db", client_id="console-central",
                      key_file=central_keys.key_file)  # fmt: skip
    central.start()
    assert central.wait_connected(10)
    console = Console(central.store, central=central, crops=central.crops, push_timeout=60)
    console.users.add("ada", ADMIN_PW, "admin", datetime.now(timezone.utc))
    console.office.put_timetable(load_timetable(timetable_for_now(), "timetable.yml"))
    for person in (Person("lin-manuel", "Lin-Manuel Miranda", "cast"), Person("kim", "Kim Minji", "cast"),
                   Person("alex", "Alex Lacamoire", "band")):  # fmt: skip
        console.office.put_person(person)
    web = ConsoleServer(central, console).start()
    db = tmp_path / "box.db"  # the box starts with an empty gallery: everyone is an unknown face at first
    log = tmp_path / "edge.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen([*edge_command(), "--config", str(box_config(tmp_path, db, broker.port, central_keys,
                                                                               rtsp)), "run"],
                                  stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    driver = browser
    try:
        # log in ----------------------------------------------------------------------------------------------------
        driver.get(web.url + "/")
        assert "/login" in driver.current_url
        driver.find_element(By.ID, "username").send_keys("ada")
        driver.find_element(By.ID, "password").send_keys(ADMIN_PW)
        driver.find_element(By.ID, "login-button").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "board-table"))
        assert "ada (admin)" in driver.find_element(By.TAG_NAME, "header").text

        # the box is online and its camera too ---------------------------------------------------------------------
        def box_online() -> bool:
            driver.get(web.url + "/health")
            text = driver.find_element(By.ID, "health").text
            return f"{SITE}/{DEVICE}" in text and "online" in text and "door: online" in text

        assert wait_until(box_online, 120, 1.0), driver.find_element(By.ID, "health").text + log.read_text()[-3000:]

        # an unknown face with its crop (Lin-Manuel, whom the box does not know yet): "this is Lin-Manuel" ---------------------------------------------------------------
        def faces_with_crops() -> List[Any]:
            driver.get(web.url + "/unknown")
            return driver.find_elements(By.CSS_SELECTOR, "article.face img")

        assert wait_until(lambda: bool(faces_with_crops()), 120, 2.0), log.read_text()[-3000:]
        first = driver.find_element(By.CSS_SELECTOR, "article.face")
        event_id = first.get_attribute("data-event")
        loaded = driver.execute_script("return arguments[0].naturalWidth", first.find_element(By.TAG_NAME, "img"))
        assert loaded == 112, "the crop is shown as the box sent it (112x112)"
        Select(first.find_element(By.CSS_SELECTOR, "form.label select")).select_by_visible_text("Lin-Manuel Miranda")
        first.find_element(By.CSS_SELECTOR, "form.label button").click()
        reviewed = text_after(driver, f'article.face[data-event="{event_id}"] .reviewed', "this is lin-manuel")
        assert "this is lin-manuel" in reviewed and "by ada" in reviewed, reviewed
        shoot(driver, shots, "unknown-faces")

        # Kim is excused --------------------------------------------------------------------------------------------
        driver.get(web.url + "/person/kim")
        Select(driver.find_element(By.ID, "kind")).select_by_value("excused")
        driver.find_element(By.ID, "why").send_keys("Doctor's note")
        driver.find_element(By.ID, "correct-button").click()
        corrections = text_after(driver, "ul.corrections", "excused by ada")
        assert "excused by ada: Doctor's note" in corrections, corrections

        # add Lin-Manuel with his photo: the box enrolls him --------------------------------------------------------
        driver.get(web.url + "/gallery")
        driver.find_element(By.ID, "new-person-id").send_keys("lin-manuel")
        driver.find_element(By.ID, "new-name").send_keys("Lin-Manuel Miranda")
        driver.find_element(By.ID, "new-group").send_keys("cast")
        driver.find_element(By.ID, "new-photos").send_keys(str(data / "hamilton" / "lin-manuel-miranda.png"))
        driver.find_element(By.ID, "add-button").click()
        message = text_after(driver, "#message", f"{SITE}/{DEVICE}:", 90)
        assert f"{SITE}/{DEVICE}: ok (person 'lin-manuel' stored with 1 embeddings" in message, message
        with Gallery(db) as gallery:
            assert [p.person_id for p in gallery.people()] == ["lin-manuel"]

        # on the board, live, within seconds of his entry -----------------------------------------------------------
        driver.get(web.url + "/")

        def entry_received() -> bool:
            return any(e["type"] == "entry" and e["person_id"] == "lin-manuel" for e in central.events())

        assert wait_until(entry_received, 120, 0.05), log.read_text()[-3000:]
        received = time.monotonic()
        WebDriverWait(driver, 15, poll_frequency=0.1).until(
            lambda d: f"Lin-Manuel Miranda entry {DEVICE}/door" in text_of(d, "#latest")
        )  # the board's list of the latest moves at the doors (his row already says "in": the reviewed face)
        shown_after = time.monotonic() - received
        assert shown_after < 5.0, f"the board showed the entry {shown_after:.1f} s after the central had it"
        row = text_of(driver, 'tr[data-person="lin-manuel"]')
        assert "present" in row and text_of(driver, 'tr[data-person="lin-manuel"] td.now') == "in"
        assert "excused" in text_of(driver, 'tr[data-person="kim"]')
        assert "absent" in text_of(driver, 'tr[data-person="alex"]')
        print(f"board showed Lin-Manuel's entry {shown_after:.2f} s after the central stored it")
        shoot(driver, shots, "board")

        # the report, and its CSV and XLSX ------------------------------------------------------------------------
        driver.get(web.url + "/report")
        shoot(driver, shots, "report")
        driver.find_element(By.ID, "download-csv").click()
        driver.find_element(By.ID, "download-xlsx").click()
        csv_rows = [line.split(",") for line in downloaded(browser.downloads, "csv").read_text("utf-8-sig").splitlines()]
        by_id = {r[1]: r for r in csv_rows[1:]}
        assert csv_rows[0][:6] == ["date", "person_id", "name", "group", "session", "status"]
        # his first entry is the reviewed face (a correction)
        assert by_id["lin-manuel"][5] == "present" and by_id["lin-manuel"][-1] == "yes"
        assert by_id["kim"][5] == "excused" and by_id["kim"][-1] == "yes"
        assert by_id["alex"][5] == "absent" and by_id["alex"][-1] == "no"
        book = load_workbook(io.BytesIO(downloaded(browser.downloads, "xlsx").read_bytes()))
        assert book.active is not None
        sheet = [[c.value for c in row] for row in book.active.iter_rows()]
        assert {r[1]: r[5] for r in sheet[1:]} == {r[1]: r[5] for r in csv_rows[1:]}

        # remove him: gone from the box ------------------------------------------------------------------------------
        driver.get(web.url + "/gallery")
        driver.find_element(By.ID, "remove-lin-manuel").click()
        message = text_after(driver, "#message", f"{SITE}/{DEVICE}:", 90)
        assert f"{SITE}/{DEVICE}: ok" in message, message
        with Gallery(db) as gallery:
            assert gallery.people() == []
        assert console.office.person("lin-manuel") == Person("lin-manuel", "Lin-Manuel Miranda", "cast", False)
        assert not re.search(r"(-?\d+\.\d+\s*,\s*){8,}", driver.page_source), "no page shows a vector"
    finally:
        daemon.terminate()
        daemon.wait(30)
        web.stop()
        central.close()
