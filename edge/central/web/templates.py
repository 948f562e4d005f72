"""The console's Jinja2 templates (edge/central/web/templates/, autoescaped) and the filters they use."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

FOLDER = Path(__file__).resolve().parent / "templates"


def _clock(moment: Optional[datetime]) -> str:
    return moment.strftime("%H:%M") if moment is not None else ""


def _when(moment: Any) -> str:
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return moment
    return moment.strftime("%Y-%m-%d %H:%M:%S") if isinstance(moment, datetime) else ""


_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(FOLDER)), autoescape=True, undefined=jinja2.StrictUndefined
)
_environment.filters["clock"] = _clock
_environment.filters["when"] = _when
templates = Jinja2Templates(env=_environment)


def render(request: Request, name: str, context: Dict[str, Any], status_code: int = 200) -> Response:
    """A page: `context` plus the defaults every template may use (session, message)."""
    full = {"session": None, "message": None, **context}
    return templates.TemplateResponse(request, name, full, status_code=status_code)
