"""Query parameters and response headers of the served document, and `GET /usage`'s example."""

from __future__ import annotations

from typing import Any

from gptactions.api.schemas import (
    CONVERSATION_ID_MAX_LENGTH,
    CURSOR_MAX_LENGTH,
    LOGS_DEFAULT_LIMIT,
    NUL_FREE_PATTERN,
    USER_ID_FILTER_MAX_LENGTH,
)
from gptactions.config import Settings
from gptactions.services.interactions import (
    SEARCH_MAX_LENGTH,
    SEARCH_MAX_WORDS,
    InteractionKind,
)

NEXT_PAGE_CURSOR = (
    "For the next page: the last page's nextCursor (in the body; also in its Link header). "
    "Any other value is a 400."
)


def query_parameter(
    name: str, schema: dict[str, Any], description: str, **extra: Any
) -> dict[str, Any]:
    """An optional query parameter."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
        **extra,
    }


def usage_parameters(settings: Settings) -> list[dict[str, Any]]:
    """The window, the user and the limit of `GET /usage`."""
    time = {"type": "string", "format": "date-time"}
    return [
        query_parameter("since", time, "Window start."),
        query_parameter("until", time, "Window end."),
        query_parameter(
            "window",
            {"type": "string", "pattern": "^[1-9][0-9]{0,4}[smhd]$"},
            "The window's length, ending now or at until: 90m, 24h, 7d (not with since).",
            example="24h",
        ),
        query_parameter(
            "userId",
            {"type": "string", "minLength": 1, "maxLength": USER_ID_FILTER_MAX_LENGTH},
            "Only this user's usage.",
        ),
        query_parameter(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": settings.logs_max_limit},
            f"Most keys and most users listed (default {LOGS_DEFAULT_LIMIT}).",
        ),
    ]


_SUMS = {
    "requests": 12,
    "rejected": 1,
    "promptTokens": 2400,
    "completionTokens": 610,
    "totalTokens": 3010,
}
USAGE_EXAMPLE = {
    "since": "2026-11-24T18:00:00.000Z",
    "until": "2026-11-25T18:00:00.000Z",
    "total": _SUMS,
    "keys": [{"keyId": "9f2c0d4e5a6b7c8d9e0f1a2b3c4d5e6f", "name": "support-gpt", **_SUMS}],
    "users": [{"tenant": "default", "userId": "alice", **_SUMS}],
    "truncated": False,
}
"""An answer of `GET /usage`, for the document."""


def log_parameters(settings: Settings) -> list[dict[str, Any]]:
    """The query parameters of GET /logs."""

    def text(max_length: int) -> dict[str, Any]:
        return {
            "type": "string",
            "minLength": 1,
            "maxLength": max_length,
            "pattern": NUL_FREE_PATTERN,
        }

    return [
        query_parameter(
            "userId", text(USER_ID_FILTER_MAX_LENGTH), "Only this user's interactions."
        ),
        query_parameter(
            "conversationId",
            text(CONVERSATION_ID_MAX_LENGTH),
            "Only this conversation's interactions.",
        ),
        query_parameter(
            "since",
            {"type": "string", "format": "date-time"},
            "Only interactions at or after this time (RFC 3339, e.g. 2026-01-31T12:00:00Z; "
            "also read: a date alone, its midnight UTC, and a time without offset, UTC).",
        ),
        query_parameter(
            "until",
            {"type": "string", "format": "date-time"},
            "Only interactions before this time (RFC 3339, read as since is).",
        ),
        query_parameter(
            "limit",
            {
                "type": "integer",
                "minimum": 1,
                "maximum": settings.logs_max_limit,
                "default": LOGS_DEFAULT_LIMIT,
            },
            "Most items to return.",
        ),
        query_parameter(
            "cursor",
            text(CURSOR_MAX_LENGTH),
            "For the next page: the nextCursor of the last item of the page before (also in "
            "its Link header).",
        ),
        query_parameter(
            "q",
            text(SEARCH_MAX_LENGTH),
            "Full-text search: only interactions whose message or reply holds every one of "
            f"these words (at most {SEARCH_MAX_WORDS}; letters and digits, any case, whole "
            "words; punctuation separates words and is otherwise ignored; a q with no word, or "
            "with more, is a 400). Combines with the other filters and the cursor.",
        ),
        query_parameter(
            "kind",
            {"type": "string", "enum": [kind.value for kind in InteractionKind]},
            "Only interactions of this kind (rejected: requests refused before the model).",
        ),
    ]


HEADERS_PREFIX = "#/components/headers/"
_SECONDS = {"type": "integer", "minimum": 1}
RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id, as the server's log names it: the client's own "
        "X-Request-ID when usable (8 to 128 of A-Z a-z 0-9 . _ : -), else req_ and 32 hex digits.",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'The next page: <url>; rel="next" (the body\'s nextCursor is its cursor). '
        "Absent on the last page.",
        "schema": {"type": "string"},
    },
    "WWW-Authenticate": {
        "description": 'The challenge: Bearer realm="gptactions", with error="invalid_token" '
        'for a key or token that is not valid, error="insufficient_scope" and the scope '
        "needed for a 403 of a missing scope.",
        "schema": {"type": "string"},
    },
    "X-Conversation-ID": {
        "description": "A streamed reply's conversation (text/event-stream only), known before "
        "the first event: a stream cut short before done stored its partial turn there.",
        "schema": {"type": "string"},
    },
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": _SECONDS},
    "RateLimit-Limit": {
        "description": "Requests the key (or OAuth user) may make per window (rate_limited).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "RateLimit-Remaining": {
        "description": "Requests left in the window: 0 (rate_limited).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the window starts over (rate_limited).",
        "schema": _SECONDS,
    },
}
"""The document's `components.headers`: what the answers carry besides their bodies."""

ERROR_HEADERS = {
    "401": ("WWW-Authenticate",),
    "403": ("WWW-Authenticate",),
    "429": ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"),
    "503": ("Retry-After",),
}
"""The headers an error answer of each status may carry, besides X-Request-ID (every answer's):
`deps.py`'s challenges, `services/limits.py`'s rate limit, and the retries of `api/errors.py`."""


def header_refs(*names: str) -> dict[str, Any]:
    """A response's `headers`: `names` (of `RESPONSE_HEADERS`) and X-Request-ID."""
    return {name: {"$ref": HEADERS_PREFIX + name} for name in (*names, "X-Request-ID")}
