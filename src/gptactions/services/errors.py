"""Errors the services raise; the API turns each into its one error shape."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gptactions.llm.router import UnknownModel
from gptactions.store.text import has_unpaired_surrogate

# What `\s` means in the document's `pattern: "\S"` (ECMA-262 regular expressions), so the
# server and every client that reads the document agree on what a blank field is.
ECMA_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
ECMA_WHITESPACE_ESCAPED = "".join(f"\\u{ord(c):04x}" for c in ECMA_WHITESPACE)
"""The same characters as `\\uXXXX` escapes, for a pattern's character class: spelled out, a
class reads alike to Python's `re` (the server's checks, and Python clients of the document) and
to JavaScript (the console's), whose `\\s` differ (U+001C-U+001F, U+0085, U+FEFF)."""


@dataclass(frozen=True)
class Problem:
    """One problem with the input: where (a JSON pointer) and what."""

    pointer: str
    message: str


def json_pointer(parts: Iterable[Any]) -> str:
    """The JSON pointer (RFC 6901) to the value at `parts`: `["a/b", 0]` -> `/a~1b/0`."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


@dataclass
class ServiceError(Exception):
    """A failure the caller can act on; `status` is the HTTP status it maps to."""

    message: str
    status: int = 400
    code: str = "invalid_request"
    details: list[Problem] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def invalid(message: str, *problems: Problem) -> ServiceError:
    """A 400 for input the API cannot accept (`invalid_input` when its problems say why)."""
    return ServiceError(message, 400, "invalid_request", list(problems))


def invalid_input(*problems: Problem) -> ServiceError:
    """A 400 whose message names the first problem: `Invalid input: message: must not ...`."""
    first = problems[0]
    # A query parameter's problem names it already ("query parameter limit: ...").
    named = not first.pointer or first.message.startswith("query parameter ")
    where = "" if named else first.pointer.lstrip("/") + ": "
    return invalid(f"Invalid input: {where}{first.message}", *problems)


UNPAIRED_SURROGATE = "must not contain an unpaired UTF-16 surrogate (\\ud800 to \\udfff)"


def unpaired_surrogates(value: Any, pointer: str = "") -> list[Problem]:
    """A problem for each string of a JSON value (keys included) with an unpaired surrogate."""
    return string_problems(value, has_unpaired_surrogate, UNPAIRED_SURROGATE, pointer)


def string_problems(
    value: Any, faulty: Callable[[str], bool], message: str, pointer: str = ""
) -> list[Problem]:
    """A problem (`message`) for each string of a JSON value (keys included) that is `faulty`.

    Iterative, so that a value nested as deeply as the JSON parser allows is walked too.
    """
    problems: list[Problem] = []
    # (the parent's pointer, the member's name or index, the member): a member's own pointer
    # is only written out for a container or a string with a problem, not for every string.
    pending: list[tuple[str, Any, Any]] = [(pointer, _ROOT, value)]
    while pending:
        parent, part, item = pending.pop()
        if isinstance(item, str):
            if faulty(item):
                problems.append(Problem(_member(parent, part), message))
        elif isinstance(item, dict):
            where = _member(parent, part)
            for key, member in item.items():
                if isinstance(key, str) and faulty(key):
                    # The pointer cannot name such a key: it could not be sent back either.
                    problems.append(Problem(where, "a member's name " + message))
                    continue
                pending.append((where, key, member))
        elif isinstance(item, list | tuple):
            where = _member(parent, part)
            pending.extend((where, index, member) for index, member in enumerate(item))
    problems.sort(key=lambda problem: problem.pointer)
    return problems


_ROOT = object()


def _member(parent: str, part: Any) -> str:
    return parent if part is _ROOT else parent + json_pointer([part])


def check_text(*fields: tuple[str, Any]) -> None:
    """A 400 when a field (a pointer and its value) holds an unpaired surrogate anywhere."""
    problems = [
        problem for pointer, value in fields for problem in unpaired_surrogates(value, pointer)
    ]
    if problems:
        raise invalid_input(*problems)


def not_found(message: str) -> ServiceError:
    """A 404 for something that does not exist for this caller."""
    return ServiceError(message, 404, "not_found")


def unknown_model(error: UnknownModel) -> ServiceError:
    """A 400 for a `model` that names no configured backend, listing those that exist."""
    return invalid_input(Problem("/model", f"must be one of: {', '.join(error.available)}"))
