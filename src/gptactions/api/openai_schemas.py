"""The request body of `POST /v1/chat/completions`, as OpenAI's API defines it.

Fields this server does not implement (logprobs, penalties, logit_bias…) are ignored, as they
are by llama.cpp's server and Ollama; those that would change the answer's shape (`n` above 1,
content other than text) are refused with a 400.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from gptactions.api.schemas import nul_free
from gptactions.llm.base import ChatMessage, ToolCall
from gptactions.services.completions import CompletionCall


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Body):
    """A part of a message's content: only text parts are understood."""

    type: Literal["text"]
    text: str


# Content is text, or a list of text parts. The discriminator picks the one form to check (not
# both, which would report "must be a string" beside a list's own problem).
Content = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[TextPart], Field(min_length=1), Tag("parts")],
    Discriminator(lambda value: "parts" if isinstance(value, list) else "text"),
]
_CONTENT_TAGS = frozenset({"text", "parts"})


class FunctionCall(_Body):
    """The function an assistant's tool call called, with its arguments as JSON text."""

    name: str
    arguments: str = ""


class ToolCallIn(_Body):
    """A tool call of an earlier assistant message."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Body):
    """Instructions: `system`, or `developer` (read as system)."""

    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Body):
    """The user's words."""

    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Body):
    """An earlier reply: its text, or the tool calls it made (or both)."""

    role: Literal["assistant"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content, or tool_calls")
        return self


class ToolMessage(_Body):
    """What a tool answered to the call `tool_call_id` names."""

    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


MessageIn = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]
"""One message of the conversation so far: its role says which fields it has, as in OpenAI's
schema (and the document's `ChatCompletionMessage`); a field another role has is ignored."""
ROLES = ("system", "developer", "user", "assistant", "tool")


def _messages_located(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """The messages, or their problems located where the client wrote them.

    Pydantic places a union member's problems under its tag (`/0/tool/content`, `/0/content/
    parts/0/text`); the tags are not in the body, so they are taken out of the locations. A role
    that is none of the roles is a problem of `role`, as any other field's wrong value is.
    """
    try:
        return handler(value)
    except ValidationError as error:
        details: list[InitErrorDetails] = []
        for problem in error.errors():
            location = list(problem["loc"])
            kind, context = problem["type"], problem.get("ctx")
            if kind in ("union_tag_invalid", "union_tag_not_found"):
                location.append("role")
                if kind == "union_tag_invalid":
                    kind = "literal_error"
                    quoted = [repr(role) for role in ROLES]
                    context = {"expected": ", ".join(quoted[:-1]) + " or " + quoted[-1]}
                else:
                    kind, context = "missing", None
            elif len(location) > 1 and location[1] in ROLES:
                del location[1]
                if location[1:2] == ["content"] and location[2:3] and location[2] in _CONTENT_TAGS:
                    del location[2]
            detail = InitErrorDetails(type=kind, loc=tuple(location), input=problem["input"])
            if context:
                detail["ctx"] = context
            details.append(detail)
        raise ValidationError.from_exception_data(error.title, details) from None


MAX_SCHEMA_DEPTH = 64
"""How deeply a JSON Schema in a request (a response format's, a tool's parameters) may nest:
far beyond any real schema, and well within what the server can walk and serialize (a schema
nested 900 levels deep was a 500)."""


def shallow(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """A schema nested at most `MAX_SCHEMA_DEPTH` levels deep (objects and arrays alike)."""
    pending: list[tuple[Any, int]] = [(schema, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list) and depth > MAX_SCHEMA_DEPTH:
            raise ValueError(f"nested deeper than {MAX_SCHEMA_DEPTH} levels")
        if isinstance(item, dict):
            pending.extend((value, depth + 1) for value in item.values())
        elif isinstance(item, list):
            pending.extend((value, depth + 1) for value in item)
    return schema


class FunctionDefinition(_Body):
    """A function the model may call."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    _parameters_shallow = field_validator("parameters")(shallow)


class Tool(_Body):
    """A tool the model may call: a function."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Body):
    """The name of the function a `tool_choice` forces."""

    name: str


class NamedToolChoice(_Body):
    """`{"type": "function", "function": {"name": ...}}`: call this function."""

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Body):
    """The schema a `json_schema` response format asks the reply to follow."""

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    _schema_shallow = field_validator("schema_")(shallow)


class ResponseFormat(_Body):
    """`text`, `json_object`, or `json_schema` with its schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("a json_schema response format needs json_schema")
        return self


class StreamOptions(_Body):
    """Options of a streamed answer."""

    include_usage: bool = False


class ChatCompletionRequest(_Body):
    """The body of `POST /v1/chat/completions`."""

    messages: list[MessageIn] = Field(min_length=1)
    model: str | None = Field(default=None, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    user: str | None = Field(default=None, min_length=1, max_length=256)

    _user_nul_free = field_validator("user")(nul_free)
    _messages_in_place = field_validator("messages", mode="wrap")(_messages_located)

    @model_validator(mode="after")
    def _stops(self) -> ChatCompletionRequest:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 sequences")
        return self

    def to_call(self) -> CompletionCall:
        """The call the completion service answers."""
        json_schema, response_format = None, None
        if self.response_format is not None and self.response_format.type != "text":
            response_format = self.response_format.model_dump(
                by_alias=True, exclude_none=True, mode="json"
            )
            given = self.response_format.json_schema
            json_schema = (given.schema_ if given else None) or {"type": "object"}
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        tool_choice = self.tool_choice
        return CompletionCall(
            messages=tuple(_message(m) for m in self.messages),
            model=self.model,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            max_tokens_field=(
                "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
            ),
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(s for s in stop if s),
            n=self.n or 1,
            json_schema=json_schema,
            response_format=response_format,
            tools=tuple(t.model_dump(exclude_none=True, mode="json") for t in self.tools or ()),
            tool_choice=(
                tool_choice.model_dump(mode="json")
                if isinstance(tool_choice, NamedToolChoice)
                else tool_choice
            ),
            user=self.user,
        )

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a chunk carrying the usage."""
        return bool(self.stream_options and self.stream_options.include_usage)


def _message(message: SystemMessage | UserMessage | AssistantMessage | ToolMessage) -> ChatMessage:
    content = message.content
    if isinstance(content, list):
        content = "\n".join(part.text for part in content)
    if isinstance(message, AssistantMessage):
        return ChatMessage(
            role="assistant",
            content=content or "",
            tool_calls=tuple(
                ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
                for call in message.tool_calls or ()
            ),
        )
    if isinstance(message, ToolMessage):
        return ChatMessage(role="tool", content=content or "", tool_call_id=message.tool_call_id)
    if isinstance(message, UserMessage):
        return ChatMessage(role="user", content=content or "")
    return ChatMessage(role="system", content=content or "")
