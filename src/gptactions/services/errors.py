"""Errors the services raise; the API turns each into its one error shape."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gptactions.llm.router import UnknownModel


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
    """A 400 for input the API cannot accept."""
    return ServiceError(message, 400, "invalid_request", list(problems))


def not_found(message: str) -> ServiceError:
    """A 404 for something that does not exist for this caller."""
    return ServiceError(message, 404, "not_found")


def unknown_model(error: UnknownModel) -> ServiceError:
    """A 400 for a `model` that names no configured backend, listing those that exist."""
    available = ", ".join(error.available)
    return invalid(
        f"unknown model {error.name!r}; available: {available}",
        Problem("/model", f"must be one of: {available}"),
    )
