"""The sign-in pages: templates rendered under the console's security headers."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gptactions.api.meta import CONSOLE, CONSOLE_HEADERS


@cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(CONSOLE / "oauth"),
        autoescape=select_autoescape(default=True),
        auto_reload=False,
    )


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A sign-in page, under the console's policy and never cached (it may carry a ticket)."""
    html = _templates().get_template(template).render(**context)
    headers = {**CONSOLE_HEADERS, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(html, status, headers=headers)
