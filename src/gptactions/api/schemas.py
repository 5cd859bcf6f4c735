"""Request bodies, as the seed's schemas define them plus the optional extension fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gptactions.config import Settings
from gptactions.services.errors import Problem, invalid

# What `\s` means in the document's `pattern: "\S"` (ECMA-262 regular expressions), so the
# server and every client that reads the document agree on what a blank field is.
ECMA_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def _not_blank(value: str) -> str:
    if not value.strip(ECMA_WHITESPACE):
        raise ValueError("must not be empty or only whitespace")
    return value


class ConversationRequest(BaseModel):
    """The seed's ConversationRequest, with optional generation settings."""

    # Strict: "5" is not a number and 5 is not a string. Unknown fields are ignored, so clients
    # written for a later version keep working.
    model_config = ConfigDict(strict=True, extra="ignore")

    userId: str
    message: str
    conversationId: str | None = Field(default=None, min_length=1, max_length=64)
    maxTokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    model: str | None = Field(default=None, min_length=1, max_length=100)

    _user_id_not_blank = field_validator("userId")(_not_blank)
    _message_not_blank = field_validator("message")(_not_blank)

    def check_limits(self, settings: Settings) -> None:
        """400 when a field passes the configured limits."""
        problems = []
        if len(self.userId) > settings.max_user_id_length:
            problems.append(
                Problem("/userId", f"must be at most {settings.max_user_id_length} characters")
            )
        if len(self.message) > settings.max_message_length:
            problems.append(
                Problem("/message", f"must be at most {settings.max_message_length} characters")
            )
        if self.maxTokens is not None and self.maxTokens > settings.max_tokens_limit:
            problems.append(Problem("/maxTokens", f"must be at most {settings.max_tokens_limit}"))
        if problems:
            first = problems[0]
            raise invalid(f"Invalid input: {first.pointer.lstrip('/')}: {first.message}", *problems)


class ActionRequest(BaseModel):
    """The seed's ActionRequest, with an optional userId (for the log) and model."""

    model_config = ConfigDict(strict=True, extra="ignore")

    action: str = Field(min_length=1, max_length=100)
    parameters: dict[str, Any]
    userId: str | None = Field(default=None, min_length=1, max_length=256)
    model: str | None = Field(default=None, min_length=1, max_length=100)
