"""The request body of `POST /v1/chat/completions`, as OpenAI's API defines it.

A field that would change the answer is followed (`frequency_penalty`, `presence_penalty` and
`logit_bias` among them), mapped (the legacy `functions` and `function_call` are tools and a
tool choice, OpenAI's own mapping), or refused with a 400 naming it when set to anything but its
default (`logprobs`, `top_logprobs`, `n` above 1, content other than text): never ignored.
Fields that change nothing in the answer (`metadata`, `store`…) are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
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
    """An earlier reply: its text, or the tool calls it made (or both); or, in OpenAI's legacy
    form, the `function_call` it made."""

    role: Literal["assistant"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    function_call: FunctionCall | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.function_call is None:
            raise ValueError("an assistant message needs content, or tool_calls")
        return self


class ToolMessage(_Body):
    """What a tool answered to the call `tool_call_id` names."""

    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


class FunctionMessage(_Body):
    """OpenAI's legacy form of a tool's answer: what the function `name` returned."""

    role: Literal["function"]
    name: str = Field(min_length=1)
    content: Content | None


MessageIn = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]
"""One message of the conversation so far: its role says which fields it has, as in OpenAI's
schema (and the document's `ChatCompletionMessage`); a field another role has is ignored."""
ROLES = ("system", "developer", "user", "assistant", "tool", "function")


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


def _answering_calls(messages: list[Any]) -> list[Any]:
    """Each `tool` message answers a call an earlier assistant message made (its
    `tool_call_id` is one of their `tool_calls`' ids), as OpenAI requires: one that answers
    nothing is refused at its `role`, as OpenAI's 400 names it. No schema can say it, so the
    document cannot either."""
    called: set[str] = set()
    for index, message in enumerate(messages):
        if isinstance(message, AssistantMessage):
            called.update(call.id for call in message.tool_calls or ())
        elif isinstance(message, ToolMessage) and message.tool_call_id not in called:
            problem = ValueError(
                "messages with role 'tool' must be a response to a preceding message with "
                f"'tool_calls' (none has the id {message.tool_call_id!r})"
            )
            detail = InitErrorDetails(
                type="value_error", loc=(index, "role"), input="tool", ctx={"error": problem}
            )
            raise ValidationError.from_exception_data("messages", [detail])
    return messages


def not_null(kind: str) -> Callable[[Any], Any]:
    """The check of a field that may be left out but is not nullable (the document types it
    without null, and OpenAI refuses null), whose value is `kind`."""

    def check(value: Any) -> Any:
        if value is None:
            raise ValueError(f"must not be null: leave it out, or give {kind}")
        return value

    return check


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


_SUBSCHEMAS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf")


def strict_schema_problem(schema: dict[str, Any]) -> str | None:
    """What makes `schema` unusable with `strict: true`, in OpenAI's words; None when nothing.

    OpenAI's Structured Outputs take a strict schema only when its root is an object and every
    object in it closes its properties (`additionalProperties: false`) and requires them all
    (an optional field is a required one that may be null). A schema it refuses is refused here
    too, so that code written against this server works against OpenAI's.
    """
    if schema.get("type") != "object" and "anyOf" not in schema:
        given = json.dumps(schema.get("type"))
        return f"schema must be a JSON Schema of 'type: \"object\"', got 'type: {given}'."
    pending: list[tuple[Any, tuple[str, ...]]] = [(schema, ())]
    while pending:
        node, context = pending.pop(0)
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if (
            kind == "object"
            or (isinstance(kind, list) and "object" in kind)
            or "properties" in node
        ):
            if node.get("additionalProperties") is not False:
                return (
                    f"In context={context!r}, 'additionalProperties' is required to be "
                    "supplied and to be false."
                )
            required = node.get("required")
            missing = [
                name
                for name in node.get("properties") or {}
                if not isinstance(required, list) or name not in required
            ]
            if missing:
                return (
                    f"In context={context!r}, 'required' is required to be supplied and to be "
                    f"an array including every key in properties. Missing '{missing[0]}'."
                )
        for key in _SUBSCHEMAS:
            if isinstance(node.get(key), dict):
                pending += [(sub, (*context, key, name)) for name, sub in node[key].items()]
        if "items" in node:
            pending.append((node["items"], (*context, "items")))
        for key in _SCHEMA_LISTS:
            if isinstance(node.get(key), list):
                pending += [(sub, (*context, key, str(i))) for i, sub in enumerate(node[key])]
    return None


class FunctionDefinition(_Body):
    """A function the model may call."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    _parameters_shallow = field_validator("parameters")(shallow)
    _strict_not_null = field_validator("strict", mode="before")(not_null("a boolean"))
    _parameters_not_null = field_validator("parameters", mode="before")(
        not_null("a JSON Schema object")
    )

    @model_validator(mode="after")
    def _strict_schema(self) -> FunctionDefinition:
        if self.strict:
            parameters = self.parameters or {"type": "object", "properties": {}}
            problem = strict_schema_problem(parameters)
            if problem is not None:
                raise ValueError(f"Invalid schema for function '{self.name}': {problem}")
        return self


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
    """The schema a `json_schema` response format asks the reply to follow; named as OpenAI
    requires (an upstream refuses any other name)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    _schema_shallow = field_validator("schema_")(shallow)

    @model_validator(mode="after")
    def _strict_schema(self) -> JsonSchemaFormat:
        if self.strict and self.schema_ is not None:
            problem = strict_schema_problem(self.schema_)
            if problem is not None:
                raise ValueError(f"Invalid schema for response_format '{self.name}': {problem}")
        return self


class ResponseFormat(_Body):
    """`text`, `json_object`, or `json_schema` with its schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("a json_schema response format needs json_schema")
        return self


def _logit_bias(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Token ids (as strings: JSON's keys) to biases from -100 to 100; every problem is one of
    `logit_bias`, as OpenAI names it."""
    for token, bias in (value or {}).items():
        if not token.isascii() or not token.isdigit() or len(token) > 9:
            raise ValueError(f"keys must be token ids (integers 0 or more); {token!r} is not one")
        number = isinstance(bias, int | float) and not isinstance(bias, bool)
        if not number or not -100 <= bias <= 100:
            raise ValueError(f"the bias of token {token} must be a number from -100 to 100")
    return value


def _no_logprobs(value: bool | None) -> bool | None:
    if value:
        raise ValueError(
            "is not supported by this server: leave it out or false (log-probabilities are not "
            "returned)"
        )
    return value


def _no_top_logprobs(value: int | None) -> int | None:
    if value:
        raise ValueError("is not supported by this server: leave it out, null or 0")
    return value


class StreamOptions(_Body):
    """Options of a streamed answer."""

    include_usage: bool = False


class ChatCompletionRequest(_Body):
    """The body of `POST /v1/chat/completions`."""

    messages: list[MessageIn] = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # int64, as documented
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, min_length=1, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    functions: list[FunctionDefinition] | None = Field(default=None, min_length=1, max_length=128)
    """OpenAI's legacy tools: answered as OpenAI answered them, with a `function_call`."""
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = Field(default=None, min_length=1, max_length=256)

    _user_nul_free = field_validator("user")(nul_free)
    _messages_in_place = field_validator("messages", mode="wrap")(_messages_located)
    _tool_answers_a_call = field_validator("messages")(_answering_calls)
    _logit_bias_checked = field_validator("logit_bias")(_logit_bias)
    _logprobs_refused = field_validator("logprobs")(_no_logprobs)
    _top_logprobs_refused = field_validator("top_logprobs")(_no_top_logprobs)

    @field_validator("functions")
    @classmethod
    def _functions_or_tools(
        cls, value: list[FunctionDefinition] | None, info: ValidationInfo
    ) -> list[FunctionDefinition] | None:
        if value is not None and info.data.get("tools") is not None:
            raise ValueError("cannot be given with tools: functions is their legacy form")
        if value is not None and info.data.get("tool_choice") is not None:
            raise ValueError("cannot be given with tool_choice: use function_call")
        return value

    @field_validator("function_call", mode="wrap")
    @classmethod
    def _function_call_names_a_function(
        cls, given: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> str | NamedFunction | None:
        try:
            value: str | NamedFunction | None = handler(given)
        except ValidationError:  # one problem of the field, not one per form it may take
            raise ValueError('must be "none", "auto", or {"name": one of the functions}') from None
        if value is None:
            return value
        if info.data.get("tool_choice") is not None:
            raise ValueError("cannot be given with tool_choice: it is its legacy form")
        if "functions" not in info.data:
            return value  # the functions are refused (an empty array, say): that is the problem
        functions = info.data.get("functions")
        if not functions and value != "none":
            raise ValueError("is only allowed when functions are specified")
        names = [function.name for function in functions or ()]
        if isinstance(value, NamedFunction) and value.name not in names:
            raise ValueError(f"names the function {value.name!r}, which is not among functions")
        return value

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 sequences")
        return value

    @field_validator("stream_options")
    @classmethod
    def _options_of_a_stream(
        cls, value: StreamOptions | None, info: ValidationInfo
    ) -> StreamOptions | None:
        if value is not None and "stream" in info.data and not info.data["stream"]:
            raise ValueError("is only allowed when stream is true (as OpenAI answers)")
        return value

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
        tool_choice: Any = self.tool_choice
        tools = [t.model_dump(exclude_none=True, mode="json") for t in self.tools or ()]
        if self.functions is not None:
            # OpenAI's own mapping of the legacy form.
            tools = [
                {"type": "function", "function": f.model_dump(exclude_none=True, mode="json")}
                for f in self.functions
            ]
            tool_choice = self.function_call
            if isinstance(tool_choice, NamedFunction):
                tool_choice = NamedToolChoice(type="function", function=tool_choice)
        return CompletionCall(
            messages=_messages(self.messages),
            model=self.model,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            max_tokens_field=(
                "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
            ),
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            logit_bias=tuple((int(token), bias) for token, bias in (self.logit_bias or {}).items()),
            stop=tuple(s for s in stop if s),
            n=self.n or 1,
            json_schema=json_schema,
            response_format=response_format,
            tools=tuple(tools),
            tool_choice=(
                tool_choice.model_dump(mode="json")
                if isinstance(tool_choice, NamedToolChoice)
                else tool_choice
            ),
            functions=self.functions is not None,
            user=self.user,
        )

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a chunk carrying the usage."""
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def legacy_functions(self) -> bool:
        """Whether the tools came as `functions`: the answer carries a `function_call`."""
        return self.functions is not None


AnyMessage = SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage


def _messages(messages: list[AnyMessage]) -> tuple[ChatMessage, ...]:
    """The messages for the model; the legacy form's calls and answers as tool calls and tool
    messages, each `function` message answering the latest call of its function."""
    converted: list[ChatMessage] = []
    calls: dict[str, str] = {}  # function name -> the id of its latest call
    for index, message in enumerate(messages):
        if isinstance(message, AssistantMessage) and message.function_call is not None:
            call_id = f"call_{index}"
            calls[message.function_call.name] = call_id
            legacy = ToolCall(call_id, message.function_call.name, message.function_call.arguments)
            chat = _message(message)
            converted.append(ChatMessage("assistant", chat.content, (*chat.tool_calls, legacy)))
        elif isinstance(message, FunctionMessage):
            call_id = calls.get(message.name, f"call_{message.name}")
            converted.append(ChatMessage("tool", _text(message.content), tool_call_id=call_id))
        else:
            converted.append(_message(message))
    return tuple(converted)


def _text(content: str | list[TextPart] | None) -> str:
    if isinstance(content, list):
        return "\n".join(part.text for part in content)
    return content or ""


def _message(message: SystemMessage | UserMessage | AssistantMessage | ToolMessage) -> ChatMessage:
    content = _text(message.content)
    if isinstance(message, AssistantMessage):
        return ChatMessage(
            role="assistant",
            content=content,
            tool_calls=tuple(
                ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
                for call in message.tool_calls or ()
            ),
        )
    if isinstance(message, ToolMessage):
        return ChatMessage(role="tool", content=content, tool_call_id=message.tool_call_id)
    if isinstance(message, UserMessage):
        return ChatMessage(role="user", content=content or "")
    return ChatMessage(role="system", content=content or "")
