"""ChatGPT's 100,000-character limit on a response: pages that fit, fields shortened visibly."""

from __future__ import annotations

import json
from typing import Any

TEXT_FIELDS = ("message", "reply", "error")


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""One encoder for every measure: `json.dumps` with options builds a new one per call."""


def json_length(value: Any) -> int:
    """Characters of `value` as the API writes it (compact, UTF-8 kept)."""
    return len(_COMPACT.encode(value))


def marker(omitted: int, unit: str = "characters") -> str:
    """What replaces the end of a shortened field."""
    return f"… [truncated: {omitted} {unit} omitted]"


def shorten(
    item: dict[str, Any], budget: int, fields: tuple[str, ...] = TEXT_FIELDS
) -> dict[str, Any]:
    """The item with its longest text `fields` cut until it fits `budget` characters.

    Each cut field ends with a visible marker and is named in `truncatedFields`.
    """
    item = dict(item)
    originals = {f: item[f] for f in fields if isinstance(item.get(f), str)}
    keep = {f: len(text) for f, text in originals.items()}
    cut: list[str] = []
    while json_length(item) > budget:
        candidates = [f for f in keep if keep[f] > 0]
        if not candidates:
            break
        field = max(candidates, key=lambda f: keep[f])
        excess = json_length(item) - budget
        # 64 more than the excess leaves room for the marker, so one cut usually suffices.
        keep[field] = max(0, keep[field] - excess - 64)
        text = originals[field]
        item[field] = text[: keep[field]] + marker(len(text) - keep[field])
        if field not in cut:
            cut.append(field)
        item["truncatedFields"] = cut  # measured too, on the next round
    return item


def fit(
    items: list[dict[str, Any]], budget: int, fields: tuple[str, ...] = TEXT_FIELDS
) -> tuple[list[dict[str, Any]], bool]:
    """The leading items whose JSON array fits `budget`, and whether any was left out.

    The first item is always kept, its text `fields` shortened when it alone is too large, so a
    page is never empty.
    """
    kept: list[dict[str, Any]] = []
    used = 2  # the brackets
    for item in items:
        size = json_length(item) + (1 if kept else 0)
        if used + size > budget:
            if kept:
                return kept, True
            item = shorten(item, budget - used, fields)
            size = json_length(item)
        kept.append(item)
        used += size
    return kept, False


def cap(
    body: dict[str, Any], budget: int, fields: tuple[str, ...], dropped: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A reply's body within `budget` characters: first the `dropped` fields (a parsed value
    the text also holds) become null, then the text `fields` are shortened; each is named in
    `truncatedFields`, and `truncated` (when the body has it) becomes true."""
    if json_length(body) <= budget:
        return body
    body = dict(body)
    cut = [f for f in dropped if body.get(f) is not None]
    for name in cut:
        body[name] = None
    if cut:
        body["truncatedFields"] = cut
    if json_length(body) > budget:
        rest = {key: value for key, value in body.items() if key != "truncatedFields"}
        # Room for the dropped fields' names, which `shorten` does not know of.
        body = shorten(rest, budget - sum(len(name) + 3 for name in cut), fields)
        names = [*cut, *body.get("truncatedFields", [])]
        if names:
            body["truncatedFields"] = names
    if "truncated" in body:
        body["truncated"] = True
    return body
