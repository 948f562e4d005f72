"""The admin's pages: the gallery (the roster with each person's enrolment photos), adding a person with photos,
setting a group, enrolling an unknown face, removing a person. A change of a person's face goes to every box that is
online as a signed upsert (all of the person's photos: a box replaces a person's embeddings); a removal as a signed
remove, which erases the person and their embeddings on the box. Each box's answer is kept and shown."""

from __future__ import annotations

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from edge.central.office import Person
from edge.central.users import Session
from edge.central.web import queries
from edge.central.web.auth import console_of
from edge.central.web.context import Console
from edge.central.web.records import Push
from edge.central.web.templates import render
from edge.errors import EdgeError
from edge.mqtt.contract import MessageError, validate

MAX_PHOTO_BYTES = 4 * 1024 * 1024
MAX_UPLOADS = 4


def _kind(image: bytes) -> Optional[str]:
    if image.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if image.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    return None


def upsert_command(person: Person, photos: List[bytes]) -> Dict[str, Any]:
    """A gallery upsert carrying the person's photos (the box detects and embeds them itself)."""
    command = {
        "schema": "edge.gallery_command/1", "request_id": uuid.uuid4().hex, "op": "upsert",
        "person": {"person_id": person.person_id, "name": person.name,
                   "photos": [base64.b64encode(p).decode("ascii") for p in photos]},
    }  # fmt: skip
    try:
        validate("edge.gallery_command/1", command)
    except MessageError as exc:
        raise EdgeError(f"not a valid gallery command: {exc}") from None
    return command


def remove_command(person_id: str) -> Dict[str, Any]:
    command = {"schema": "edge.gallery_command/1", "request_id": uuid.uuid4().hex, "op": "remove",
               "person_id": person_id}  # fmt: skip
    validate("edge.gallery_command/1", command)
    return command


def push_everywhere(console: Console, person_id: str, command: Dict[str, Any], by: str) -> List[Push]:
    """Send `command` to every online box at once and wait for each answer; an offline box is skipped (its row
    says so: push again when it is back)."""
    central = console.central
    if central is None:
        raise EdgeError("this console has no broker connection: start it with the broker and --key-file")
    boxes = queries.boxes(console.store)
    online = [b for b in boxes if b.state == "online"]

    def one(site: str, device: str) -> Push:
        at = console.clock().isoformat(timespec="seconds")
        try:
            result = central.push(site, device, command, timeout=console.push_timeout)
            status, reason = str(result["status"]), str(result["reason"])
        except EdgeError as exc:
            status, reason = "failed", str(exc)
        return Push(person_id, command["op"], site, device, status, reason, by, at)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(online)))) as pool:
        pushes = list(pool.map(lambda b: one(b.site, b.device_id), online))
    at = console.clock().isoformat(timespec="seconds")
    pushes += [Push(person_id, command["op"], b.site, b.device_id, "skipped", f"box is {b.state or 'unknown'}", by, at)
               for b in boxes if b.state != "online"]  # fmt: skip
    for push in pushes:
        console.records.add_push(push)
    return pushes


async def gallery(request: Request, session: Session) -> Response:
    console = console_of(request)
    people = console.office.people()
    counts = console.records.photo_counts()
    pushes = console.records.last_pushes(limit=30)
    boxes = await run_in_threadpool(queries.boxes, console.store)
    return render(request, "gallery.html", {
        "session": session, "people": people, "counts": counts, "pushes": pushes, "boxes": boxes,
        "can_push": console.central is not None, "message": request.query_params.get("message"),
    })  # fmt: skip


async def _uploads(form: Any) -> List[bytes]:
    photos = []
    for item in form.getlist("photos"):
        if not isinstance(item, UploadFile):
            continue
        image = await item.read(MAX_PHOTO_BYTES + 1)
        if not image:
            continue
        if len(image) > MAX_PHOTO_BYTES:
            raise EdgeError(f"{item.filename}: over {MAX_PHOTO_BYTES // (1024 * 1024)} MB")
        if _kind(image) is None:
            raise EdgeError(f"{item.filename}: send JPEG or PNG photos")
        photos.append(image)
    if len(photos) > MAX_UPLOADS:
        raise EdgeError(f"at most {MAX_UPLOADS} photos at a time")
    return photos


def _summary(pushes: List[Push]) -> str:
    if not pushes:
        return "no box known yet"
    return "; ".join(f"{p.site}/{p.device_id}: {p.status} ({p.reason})" for p in pushes)


async def add_person(request: Request, session: Session) -> Response:
    """Add (or update) a person on the roster; with photos, enroll them on every box."""
    console = console_of(request)
    form = await request.form()
    try:
        group = str(form.get("group", "")).strip() or None
        who = Person(str(form.get("person_id", "")).strip(), str(form.get("name", "")).strip(), group)
        photos = await _uploads(form)
        console.office.put_person(who)
        message = f"{who.name} is on the roster"
        if photos:
            now = console.clock()
            for image in photos:
                console.records.add_photo(who.person_id, image, "upload", session.user.username, now)
            command = upsert_command(who, console.records.photos(who.person_id))
            pushes = await run_in_threadpool(push_everywhere, console, who.person_id, command, session.user.username)
            message += f"; enrolment: {_summary(pushes)}"
    except (EdgeError, ValueError) as exc:
        return render(request, "error.html", {"session": session, "message": f"Not added: {exc}", "back": "/gallery"}, 400)
    return RedirectResponse(f"/gallery?message={_quote(message)}", status_code=303)


async def set_group(request: Request, session: Session) -> Response:
    console = console_of(request)
    form = await request.form()
    who = console.office.person(request.path_params["person_id"])
    if who is None:
        return render(request, "error.html", {"session": session, "message": "No such person."}, 404)
    try:
        group = str(form.get("group", "")).strip() or None
        console.office.put_person(Person(who.person_id, who.name, group, who.active))
    except (EdgeError, ValueError) as exc:
        return render(request, "error.html", {"session": session, "message": f"Not changed: {exc}"}, 400)
    message = f"{who.name}: group {group or 'none'}"
    return RedirectResponse(f"/gallery?message={_quote(message)}", status_code=303)


async def remove_person(request: Request, session: Session) -> Response:
    """Erase the person on every box (a signed remove), forget their photos, and take them off the roster
    (inactive: their past rows stay in the reports)."""
    console = console_of(request)
    who = console.office.person(request.path_params["person_id"])
    if who is None:
        return render(request, "error.html", {"session": session, "message": "No such person."}, 404)
    try:
        pushes = await run_in_threadpool(
            push_everywhere, console, who.person_id, remove_command(who.person_id), session.user.username
        )
    except EdgeError as exc:
        return render(request, "error.html", {"session": session, "message": f"Not removed: {exc}"}, 400)
    console.records.forget_photos(who.person_id)
    console.office.set_active(who.person_id, False)
    message = f"{who.name} removed: {_summary(pushes)}"
    return RedirectResponse(f"/gallery?message={_quote(message)}", status_code=303)


async def enroll_face(request: Request, session: Session) -> Response:
    """"Enroll this face": the unknown face's crop joins a person's photos (a new person when the form names one)
    and the person's photos go to every box."""
    console = console_of(request)
    form = await request.form()
    event_id = request.path_params["event_id"]
    image = await run_in_threadpool(console.crops.read, event_id) if console.crops is not None else None
    if image is None:
        return render(request, "error.html", {"session": session, "message": "This face has no crop."}, 404)
    try:
        person_id = str(form.get("person_id", "")).strip()
        who = console.office.person(person_id)
        if who is None:
            name = str(form.get("name", "")).strip() or person_id
            who = Person(person_id, name, str(form.get("group", "")).strip() or None)
            console.office.put_person(who)
        console.records.add_photo(who.person_id, image, f"crop {event_id}", session.user.username, console.clock())
        command = upsert_command(who, console.records.photos(who.person_id))
        pushes = await run_in_threadpool(push_everywhere, console, who.person_id, command, session.user.username)
    except (EdgeError, ValueError) as exc:
        return render(request, "error.html", {"session": session, "message": f"Not enrolled: {exc}"}, 400)
    console.records.review(event_id, who.person_id, "enrolled", session.user.username, console.clock())
    message = f"face enrolled as {who.name}: {_summary(pushes)}"
    return RedirectResponse(f"/gallery?message={_quote(message)}", status_code=303)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:600], safe="")
