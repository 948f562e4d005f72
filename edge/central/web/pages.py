"""The pages staff read and correct from: today's board, a person's history, the report with its downloads, the
unknown faces of a day (with "this is <person>"), and the boxes' health."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Dict, List, Optional

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from edge.central import export, fleet
from edge.central.report import ReportRow
from edge.central.users import Session
from edge.central.web import queries
from edge.central.web.auth import console_of, safe_next
from edge.central.web.context import Console
from edge.central.web.templates import render
from edge.errors import EdgeError

MOVES = ("entry", "exit", "outing_start", "outing_end")
NOW_INSIDE = {"entry": "in", "outing_end": "in", "exit": "out", "outing_start": "out"}


def _day(text: Optional[str], console: Console) -> date:
    if not text:
        return console.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        return console.today()


def _group(text: Optional[str]) -> Optional[str]:
    return text.strip() if text and text.strip() else None


def board_data(console: Console, day: date, group: Optional[str]) -> Dict[str, Any]:
    """The board: one line per person and session (the report), whether they are in or out now (their last move
    of the day), the counts, and the day's latest moves with names."""
    rows = console.office.report(day, group=group)
    moves = queries.day_events(console.store, day, console.zone(), MOVES)
    manual = [{"person_id": c.person_id, "type": "entry" if c.kind == "manual_entry" else "exit", "at": c.at}
              for c in console.office.corrections(day) if c.at is not None]  # fmt: skip
    last_move: Dict[str, Dict[str, Any]] = {}
    for move in sorted(moves + manual, key=lambda m: m["at"]):
        if move["person_id"]:
            last_move[move["person_id"]] = move
    names = {p.person_id: p.name for p in console.office.people()}
    lines: List[Dict[str, Any]] = []
    for row in rows:
        last = last_move.get(row.person_id)
        where = NOW_INSIDE.get(last["type"], "") if last is not None and row.status != "absent" else ""
        lines.append({"row": row, "now": where})
    counts = {
        "in": len({line["row"].person_id for line in lines if line["now"] == "in"}),
        "out": len({line["row"].person_id for line in lines if line["now"] == "out"}),
        "absent": sum(1 for row in rows if row.status == "absent"),
        "late": sum(1 for row in rows if row.status == "late"),
        "excused": sum(1 for row in rows if row.status == "excused"),
    }
    latest = [{**m, "name": names.get(m["person_id"] or "", m["person_id"])} for m in reversed(moves[-12:])]
    groups = sorted({p.group for p in console.office.people() if p.group})
    return {"day": day, "group": group, "lines": lines, "counts": counts, "latest": latest, "groups": groups}


async def board(request: Request, session: Session) -> Response:
    console = console_of(request)
    day = _day(request.query_params.get("date"), console)
    data = await run_in_threadpool(board_data, console, day, _group(request.query_params.get("group")))
    return render(request, "board.html", {"session": session, **data, "today": day == console.today()})


async def board_live(request: Request, session: Session) -> Response:
    """The board's changing part, fetched every few seconds by console.js."""
    console = console_of(request)
    day = _day(request.query_params.get("date"), console)
    data = await run_in_threadpool(board_data, console, day, _group(request.query_params.get("group")))
    return render(request, "board_live.html", {"session": session, **data})


async def person(request: Request, session: Session) -> Response:
    console = console_of(request)
    person_id = request.path_params["person_id"]
    who = console.office.person(person_id)
    end = _day(request.query_params.get("end"), console)
    start = (
        _day(request.query_params.get("start"), console)
        if request.query_params.get("start")
        else end - timedelta(days=13)
    )
    if start > end:
        start = end
    rows: List[ReportRow] = []
    message = None
    try:
        rows = await run_in_threadpool(console.office.history, person_id, start, end)
    except EdgeError as exc:
        message = str(exc)
    fixes = [c for c in console.office.corrections(start, end) if c.person_id == person_id]
    return render(request, "person.html", {
        "session": session, "who": who, "person_id": person_id, "rows": rows, "start": start, "end": end,
        "corrections": fixes, "today": console.today(), "message": message,
    })  # fmt: skip


async def correct(request: Request, session: Session) -> Response:
    """A correction by staff: excused, or a manual entry / exit at a time of that day."""
    console = console_of(request)
    form = await request.form()
    target = safe_next(str(form.get("next", "/")))
    try:
        day = date.fromisoformat(str(form.get("date", "")))
        kind = str(form.get("kind", ""))
        at = None
        if kind in ("manual_entry", "manual_exit"):
            at = datetime.combine(day, datetime.strptime(str(form.get("time", "")), "%H:%M").time(), console.zone())
        await run_in_threadpool(
            console.office.correct, day, str(form.get("person_id", "")), kind, session.user.username,
            str(form.get("why", "")).strip(), at,
        )  # fmt: skip
    except (EdgeError, ValueError) as exc:
        return render(
            request, "error.html", {"session": session, "message": f"Not recorded: {exc}", "back": target}, 400
        )
    return RedirectResponse(target, status_code=303)


async def report(request: Request, session: Session) -> Response:
    console = console_of(request)
    day = _day(request.query_params.get("date"), console)
    group = _group(request.query_params.get("group"))
    rows = await run_in_threadpool(console.office.report, day, group)
    groups = sorted({p.group for p in console.office.people() if p.group})
    return render(request, "report.html", {"session": session, "day": day, "group": group, "rows": rows,
                                           "groups": groups, "formats": export.FORMATS})  # fmt: skip


async def report_file(request: Request, session: Session) -> Response:
    console = console_of(request)
    fmt = request.path_params["format"]
    if fmt not in export.FORMATS:
        return render(request, "error.html", {"session": session, "message": f"No such format: {fmt}"}, 404)
    day = _day(request.query_params.get("date"), console)
    group = _group(request.query_params.get("group"))
    rows = await run_in_threadpool(console.office.report, day, group)
    data = export.write(rows, fmt)
    name = f"attendance-{day.isoformat()}{'-' + group if group else ''}.{fmt}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Response(data, media_type=export.MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{safe}"'})  # fmt: skip


async def unknown(request: Request, session: Session) -> Response:
    console = console_of(request)
    day = _day(request.query_params.get("date"), console)
    faces = queries.day_events(console.store, day, console.zone(), ("unknown_face",))
    reviews = console.records.reviews([f["event_id"] for f in faces])
    crops = console.crops
    shown = []
    for face in reversed(faces):
        has_crop = crops is not None and await run_in_threadpool(crops.read, face["event_id"]) is not None
        shown.append({**face, "has_crop": has_crop, "review": reviews.get(face["event_id"])})
    people = [p for p in console.office.people() if p.active]
    return render(request, "unknown.html", {"session": session, "day": day, "faces": shown, "people": people,
                                            "can_enroll": console.central is not None})  # fmt: skip


async def crop(request: Request, session: Session) -> Response:
    console = console_of(request)
    image = None
    if console.crops is not None:
        image = await run_in_threadpool(console.crops.read, request.path_params["event_id"])
    if image is None:
        return Response("no crop", status_code=404, media_type="text/plain")
    return Response(image, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


async def label(request: Request, session: Session) -> Response:
    """ "This is <person>": the unknown face becomes a manual entry of that person at its time (a correction: the
    event itself stays as the box sent it), and the face is marked reviewed."""
    console = console_of(request)
    form = await request.form()
    event_id = request.path_params["event_id"]
    face = queries.event(console.store, event_id)
    person_id = str(form.get("person_id", ""))
    if face is None or face["type"] != "unknown_face":
        return render(request, "error.html", {"session": session, "message": "No such unknown face."}, 404)
    at = face["at"].astimezone(console.zone())
    try:
        await run_in_threadpool(
            console.office.correct, at.date(), person_id, "manual_entry", session.user.username,
            f"unknown face {event_id} reviewed: this is {person_id}", at,
        )  # fmt: skip
    except EdgeError as exc:
        return render(request, "error.html", {"session": session, "message": f"Not recorded: {exc}"}, 400)
    console.records.review(event_id, person_id, "labelled", session.user.username, console.clock())
    return RedirectResponse(f"/unknown?date={at.date().isoformat()}", status_code=303)


async def health(request: Request, session: Session) -> Response:
    console = console_of(request)
    boxes = await run_in_threadpool(queries.boxes, console.store)
    lags = {(b.site, b.device_id): b for b in await run_in_threadpool(fleet.box_lags, console.store)}
    workers = [w for w in await run_in_threadpool(fleet.workers, console.store) if w.alive()]
    shown = []
    for box in boxes:
        stats = console.central.stats_of(box.site, box.device_id) if console.central is not None else None
        outbox = (stats or {}).get("outbox", {})
        lag = lags.get((box.site, box.device_id))
        if not outbox and lag is not None:  # stats kept in the store by whichever central or worker got them
            outbox = {"depth": lag.depth, "oldest_unacked_age_s": lag.oldest_unacked_age_s}
            stats = {"at": lag.stats_at}
        shown.append({"box": box, "depth": outbox.get("depth"), "oldest": outbox.get("oldest_unacked_age_s"),
                      "stats_at": (stats or {}).get("at"),
                      "behind": max(0, lag.last_seq - lag.central_acked_up_to) if lag is not None else None})  # fmt: skip
    fleet_rate = round(sum(w.events_per_s for w in workers), 1)
    return render(request, "health.html", {"session": session, "boxes": shown, "workers": workers,
                                           "events_per_s": fleet_rate})  # fmt: skip
