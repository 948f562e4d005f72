"""The click group every `edge` command group uses: the library's errors become one line and a non-zero exit."""

from __future__ import annotations

from typing import Any

import click

from edge.errors import EdgeError


class EdgeGroup(click.Group):
    """Turns the library's errors into one clear line on stderr and a non-zero exit, never a traceback (also when a
    sub-group is used on its own, without `edge`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeError as exc:
            raise click.ClickException(str(exc)) from None
