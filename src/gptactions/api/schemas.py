"""Request bodies, as the seed's schemas define them plus the optional extension fields.

Limits that have a setting (userId, message, maxTokens) are checked against the settings by
`check_limits`; the fixed ones are named below. The document (`openapi`) states both.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from gptactions.config import Settings
from gptactions.services.errors import (
    ECMA_WHITESPACE,
    ECMA_WHITESPACE_ESCAPED,
    Problem,
    invalid_input,
)
from gptactions.services.keys import Principal

CONVERSATION_ID_MAX_LENGTH = 64
"""Longer than any id the server makes (`conv_` and 32 hex digits)."""
MODEL_NAME_MAX_LENGTH = 100
"""Longer than any backend's name may be."""
ACTION_NAME_MAX_LENGTH = 100
"""Longer than any action's name may be."""
TEMPERATURE_MAX = 2.0
REPEAT_PENALTY_MIN, REPEAT_PENALTY_MAX = 1.0, 2.0
USER_ID_FILTER_MAX_LENGTH = 1024
"""`GET /logs?userId=` (and `/usage`'s): generous, so the log stays searchable after the userId
limit is lowered. A user's own data (`/me/export`, `/me/data`) takes the body's bound instead,
GPTACTIONS_MAX_USER_ID_LENGTH (`check_user_id`)."""
CURSOR_MAX_LENGTH = 200
LOGS_DEFAULT_LIMIT = 100


def check_limit(limit: int, maximum: int) -> None:
    """A 400 for a `limit` query parameter above `maximum` (GPTACTIONS_LOGS_MAX_LIMIT)."""
    if limit > maximum:
        raise invalid_input(Problem("/limit", f"query parameter limit: must be at most {maximum}"))


def check_user_id(user_id: str | None, settings: Settings) -> None:
    """A 400 for a `userId` query parameter of a user's own data (`/me/export`, `/me/data`)
    longer than GPTACTIONS_MAX_USER_ID_LENGTH, the bound of a body's `userId`."""
    if user_id is not None and len(user_id) > settings.max_user_id_length:
        raise invalid_input(
            Problem(
                "/userId",
                f"query parameter userId: must be at most {settings.max_user_id_length} characters",
            )
        )


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip(ECMA_WHITESPACE):
        raise ValueError("must not be empty or only whitespace")
    return value


NUL_FREE_PATTERN = r"^[^\u0000]*$"
"""The document's `pattern` for an identifier (userId, conversationId): no U+0000 anywhere."""
NUL_FREE_NOT_BLANK_PATTERN = rf"^[^\u0000]*[^{ECMA_WHITESPACE_ESCAPED}\u0000][^\u0000]*$"
"""The same, and not blank (whitespace as `_not_blank` and ECMA-262 have it, spelled out)."""


def nul_free(value: str | None) -> str | None:
    """An identifier without U+0000. PostgreSQL cannot store that character at all, and an id
    rewritten on the way in (as free text is, `store.text.storable`) would name another user or
    conversation; so it is refused, on every database alike."""
    if value is not None and "\x00" in value:
        raise ValueError("must not contain the character U+0000 (NUL)")
    return value


NulFree = Annotated[str | None, AfterValidator(nul_free)]
"""An optional identifier of a query string (`?userId=`), held to `nul_free`."""

_DATE_FIRST = re.compile(r"\d{4}-\d{2}-\d{2}")


def _rfc3339(value: object) -> object:
    """A time of a query string as RFC 3339 writes it: pydantic also reads a bare number as
    seconds since 1970, so `?since=2026` was 33 minutes past the epoch (everything matched)."""
    if not isinstance(value, str) or not _DATE_FIRST.match(value):
        raise ValueError("must be a date and time (RFC 3339), such as 2026-01-31T12:00:00Z")
    return value


Timestamp = Annotated[datetime | None, BeforeValidator(_rfc3339)]
"""An optional time of a query string (`?since=`, `?until=`), RFC 3339 only."""


class _RequestBody(BaseModel):
    """A request body: strict, unknown fields ignored, and no field `null`."""

    # Strict: "5" is not a number and 5 is not a string. Unknown fields are ignored, so clients
    # written for a later version keep working.
    model_config = ConfigDict(strict=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        """A field sent as `null` is refused, as the document says (no field here is
        `nullable`): `null` is not a string or a number, and reading it as "absent" would
        accept what every client generated from the document is told is invalid. One scan of
        the body, not a validator per field: this is on every request's path."""
        if isinstance(data, dict) and None in data.values():
            nulls = [name for name, value in data.items() if value is None]
            problems = [
                Problem(f"/{n}", "must not be null") for n in nulls if n in cls.model_fields
            ]
            _raise_first(problems)
        return data

    @classmethod
    def required_of(cls, caller: Principal) -> tuple[str, ...]:
        """Fields this caller must send that the model alone cannot require (its 400 for another
        field names them too, so one answer lists every problem)."""
        return ()


class ConversationRequest(_RequestBody):
    """The seed's ConversationRequest, with optional generation settings."""

    userId: str | None = None  # required for API keys; an OAuth token's user otherwise
    message: str
    conversationId: str | None = Field(
        default=None, min_length=1, max_length=CONVERSATION_ID_MAX_LENGTH
    )
    maxTokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=TEMPERATURE_MAX)
    repeatPenalty: float | None = Field(default=None, ge=REPEAT_PENALTY_MIN, le=REPEAT_PENALTY_MAX)
    model: str | None = Field(default=None, min_length=1, max_length=MODEL_NAME_MAX_LENGTH)

    _user_id_not_blank = field_validator("userId")(_not_blank)
    _message_not_blank = field_validator("message")(_not_blank)

    @classmethod
    def required_of(cls, caller: Principal) -> tuple[str, ...]:
        """An API key's caller names the user; an OAuth token is its own user."""
        return ("userId",) if caller.user_id is None else ()

    _ids_nul_free = field_validator("userId", "conversationId")(nul_free)

    def check_limits(self, settings: Settings) -> None:
        """400 when a field passes the configured limits."""
        problems = _user_id_problems(self.userId, settings)
        if len(self.message) > settings.max_message_length:
            problems.append(
                Problem("/message", f"must be at most {settings.max_message_length} characters")
            )
        if self.maxTokens is not None and self.maxTokens > settings.max_tokens_limit:
            problems.append(Problem("/maxTokens", f"must be at most {settings.max_tokens_limit}"))
        _raise_first(problems)


class ActionRequest(_RequestBody):
    """The seed's ActionRequest, with an optional userId (for the log), model and maxTokens."""

    action: str = Field(min_length=1, max_length=ACTION_NAME_MAX_LENGTH)
    parameters: dict[str, Any]
    userId: str | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, min_length=1, max_length=MODEL_NAME_MAX_LENGTH)
    maxTokens: int | None = Field(default=None, ge=1)

    _user_id_not_blank = field_validator("userId")(_not_blank)
    _user_id_nul_free = field_validator("userId")(nul_free)

    def check_limits(self, settings: Settings) -> None:
        """400 when userId is longer than `GPTACTIONS_MAX_USER_ID_LENGTH`, or maxTokens more
        than `GPTACTIONS_MAX_TOKENS_LIMIT`."""
        problems = _user_id_problems(self.userId, settings)
        if self.maxTokens is not None and self.maxTokens > settings.max_tokens_limit:
            problems.append(Problem("/maxTokens", f"must be at most {settings.max_tokens_limit}"))
        _raise_first(problems)


def _user_id_problems(user_id: str | None, settings: Settings) -> list[Problem]:
    if user_id is not None and len(user_id) > settings.max_user_id_length:
        return [Problem("/userId", f"must be at most {settings.max_user_id_length} characters")]
    return []


def _raise_first(problems: list[Problem]) -> None:
    """A 400 listing every problem, summed up by the first."""
    if problems:
        raise invalid_input(*problems)
