"""The report as a file: CSV (UTF-8 with a BOM, so spreadsheet programs read names right), XLSX (openpyxl) or
JSON. One row per ReportRow, the columns of COLUMNS; times are the site's local wall clock.

    data = write(office.report(day), "xlsx")      # bytes, ready to download or attach
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence

from edge.central.report import ReportRow
from edge.errors import EdgeError

FORMATS = ("csv", "xlsx", "json")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
}
COLUMNS = (
    "date", "person_id", "name", "group", "session", "status", "first_entry", "last_exit", "minutes_late",
    "outings", "minutes_out", "device_id", "camera_id", "corrected",
)  # fmt: skip


class ExportError(EdgeError):
    """An unknown format, or a writer that is not installed."""


def _clock(moment: Optional[datetime]) -> str:
    return moment.strftime("%H:%M") if moment is not None else ""


def table(rows: Sequence[ReportRow]) -> List[List[Any]]:
    """The rows as cells: date YYYY-MM-DD, times HH:MM local, empty for none, corrected yes/no."""
    out = []
    for r in rows:
        out.append([
            r.date.isoformat(), r.person_id, r.name, r.group or "", r.session or "", r.status, _clock(r.first_entry),
            _clock(r.last_exit), r.minutes_late, r.outings, r.minutes_out, r.device_id or "", r.camera_id or "",
            "yes" if r.corrected else "no",
        ])  # fmt: skip
    return out


def as_dict(row: ReportRow) -> Dict[str, Any]:
    """A row for JSON: dates and times ISO-8601 (times with their UTC offset), none as null."""
    return {
        "date": row.date.isoformat(), "person_id": row.person_id, "name": row.name, "group": row.group,
        "session": row.session, "status": row.status,
        "first_entry": row.first_entry.isoformat() if row.first_entry else None,
        "last_exit": row.last_exit.isoformat() if row.last_exit else None,
        "minutes_late": row.minutes_late, "outings": row.outings, "minutes_out": row.minutes_out,
        "device_id": row.device_id, "camera_id": row.camera_id, "corrected": row.corrected,
    }  # fmt: skip


def write(rows: Sequence[ReportRow], format: str) -> bytes:
    """The rows as a csv, xlsx or json file's bytes."""
    if format == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        writer.writerows(table(rows))
        return ("\ufeff" + text.getvalue()).encode("utf-8")
    if format == "json":
        return json.dumps({"columns": list(COLUMNS), "rows": [as_dict(r) for r in rows]}, ensure_ascii=False,
                          indent=1).encode("utf-8")  # fmt: skip
    if format == "xlsx":
        return _xlsx(rows)
    raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")


def _xlsx(rows: Sequence[ReportRow]) -> bytes:
    try:
        from openpyxl import Workbook
        from openpyxl.utils import get_column_letter
    except ImportError:
        raise ExportError("XLSX needs openpyxl: install the central's extras (pip install '.[central]')") from None
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "attendance"
    cells = table(rows)
    sheet.append(list(COLUMNS))
    for line in cells:
        sheet.append(line)
    sheet.freeze_panes = "A2"
    for i, name in enumerate(COLUMNS, start=1):
        widest = max([len(name)] + [len(str(line[i - 1])) for line in cells])
        sheet.column_dimensions[get_column_letter(i)].width = min(40, widest + 2)
    data = io.BytesIO()
    book.save(data)
    return data.getvalue()
