"""Query parameters of the served document, and those of `GET /usage` with its example."""

from __future__ import annotations

from typing import Any

from gptactions.api.schemas import LOGS_DEFAULT_LIMIT, USER_ID_FILTER_MAX_LENGTH
from gptactions.config import Settings


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
