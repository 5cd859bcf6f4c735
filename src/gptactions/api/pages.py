"""The sign-in pages: templates rendered under the console's security headers."""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gptactions.api.forwarded import public_origin
from gptactions.api.meta import CONSOLE, CONSOLE_HEADERS
from gptactions.config import Settings

_BASE: ContextVar[str] = ContextVar("page_base", default="")
"""The path under which the browser reaches this server (`/gpt` behind a proxy's prefix), which
the pages' links and forms start with; set by each route that renders one (`serve_pages`)."""


def page_base() -> str:
    """The path the pages of this request link under ('' at the root)."""
    return _BASE.get()


def serve_pages(request: Request, settings: Settings) -> None:
    """Make the pages this request renders link under the path the browser used: the
    `GPTACTIONS_PUBLIC_URL`'s, or a trusted proxy's `X-Forwarded-Prefix`."""
    _BASE.set(urlsplit(public_origin(request, settings)).path.rstrip("/"))


@cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(CONSOLE / "oauth"),
        autoescape=select_autoescape(default=True),
        auto_reload=False,
    )


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A sign-in page, under the console's policy and never cached (it may carry a ticket)."""
    html = _templates().get_template(template).render(base=_BASE.get(), **context)
    headers = {**CONSOLE_HEADERS, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(html, status, headers=headers)
