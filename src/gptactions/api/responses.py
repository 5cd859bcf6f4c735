"""Response bodies, as models: they serialize the answers and describe them in the document.

Field names are snake_case in Python and camelCase on the wire, as in the seed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from gptactions.api.errors import MAX_DETAILS, MAX_ERROR_TEXT
from gptactions.services.interactions import FinishReason, InteractionKind, InteractionStatus

COMPONENTS = "#/components/schemas/{model}"


class Body(BaseModel):
    """A response body: camelCase on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def wire(self) -> dict[str, Any]:
        """The body as JSON-ready data, with the document's names."""
        return self.model_dump(mode="json", by_alias=True)


class Shortenable(Body):
    """A body whose long text fields may be shortened to fit GPTACTIONS_MAX_RESPONSE_CHARS."""

    truncated_fields: list[str] | None = Field(
        default=None,
        description="The fields shortened to fit the response size limit "
        "(GPTACTIONS_MAX_RESPONSE_CHARS), each ending with a visible '… [truncated: N characters "
        "omitted]' marker; absent when none was.",
    )

    def wire(self) -> dict[str, Any]:
        """The body as JSON-ready data; `truncatedFields` only when some were."""
        data = super().wire()
        if data.get("truncatedFields") is None:
            data.pop("truncatedFields", None)
        return data

    def wire_json(self) -> str:
        """The body as the JSON text `wire()` would be written as."""
        unset = {"truncated_fields"} if self.truncated_fields is None else None
        return self.model_dump_json(by_alias=True, exclude=unset)


FINISH_REASON = (
    "How the reply ended: stop (the model ended it), length (maxTokens or the model's context "
    "window), deadline (GPTACTIONS_REQUEST_DEADLINE came first: the reply so far), cancelled "
    "(the client went away)."
)
TRUNCATED = (
    "Whether the reply is not the model's whole answer: cut by maxTokens or the deadline "
    "(finishReason length or deadline), or by an action's own limit (summarize's maxWords), or "
    "shortened to fit the response size limit."
)


class Usage(Body):
    """Token counts of one generation."""

    prompt_tokens: int = Field(
        description="Tokens of the prompt the model read: the system prompt, as many of the "
        "conversation's recent turns as fit, and this message (cachedTokens included)."
    )
    completion_tokens: int = Field(description="Tokens the model generated for the reply.")
    cached_tokens: int = Field(
        default=0, description="Prompt tokens the model had already processed (prompt cache)."
    )


class ConversationResponse(Shortenable):
    """The reply to one message, with the model that gave it, its token counts and latency."""

    # The seed describes the fields it has (conversationId, reply); the document keeps its words.
    conversation_id: str
    reply: str
    model: str = Field(description="The model that replied.")
    usage: Usage
    latency_ms: int = Field(description="Time to the reply, in ms.")
    finish_reason: FinishReason = Field(description=FINISH_REASON)
    truncated: bool = Field(description=TRUNCATED)


class BackendStatus(Shortenable):
    """One configured backend, as `GET /status` reports it (`lastError` shortened, named in
    `truncatedFields`, when the status would pass the response size limit)."""

    name: str = Field(
        description="The backend's name, which a request's `model` may give to choose it."
    )
    kind: str = Field(
        description="local: the embedded model; openai: an OpenAI-compatible upstream server; "
        "fake: a stand-in for tests."
    )
    model: str = Field(
        description="The model it runs (an upstream's: as configured, else the first its "
        "/models lists, else default)."
    )
    reachable: bool = Field(
        description="Embedded model: whether it is loaded. Upstream: whether its last request "
        "or check got an answer (an error answer counts; no connection does not)."
    )
    state: str = Field(
        description=(
            "ok; failing: it answers, but its last request failed; unreachable; checking: the "
            "start-up check is still under way."
        ),
        json_schema_extra={"enum": ["ok", "failing", "unreachable", "checking"]},
    )
    last_error: str | None = Field(
        description="The last failure's message; for admin keys only (null for the others)."
    )
    latency_ms: int | None = Field(
        description="How long its last successful generation (an upstream's: request, else "
        "its /models check) took, in ms; null until there is one."
    )
    # The embedded model's engine; absent for other backends.
    sequences: int | None = Field(
        default=None, description="Embedded model: requests it can generate at once."
    )
    sequences_in_use: int | None = Field(
        default=None, description="Embedded model: requests being generated now."
    )
    queue_depth: int | None = Field(
        default=None,
        description=(
            "Embedded model: requests waiting for a free sequence, not counting those being "
            "generated (sequencesInUse); at GPTACTIONS_MODEL_QUEUE the next one is a 503."
        ),
    )
    tokens_per_second: float | None = Field(
        default=None, description="Tokens generated per second over the last minute."
    )


class StatusResponse(Shortenable):
    """The server's status, version, backends and database health."""

    status: str
    uptime: str
    uptime_seconds: int = Field(description="Seconds since the server started (uptime).")
    version: str = Field(description="The server's version.")
    backend: str = Field(description="The default backend's name.")
    model: str = Field(description="The default backend's model.")
    database: str = Field(
        description="ok when the database answers, unreachable when it does not.",
        json_schema_extra={"enum": ["ok", "unreachable"]},
    )
    backends: list[BackendStatus] = Field(
        description="Every configured backend, the default first."
    )


class LogItem(Shortenable):
    """One interaction: a conversation turn, an action call, or a request refused before the
    model (kind rejected: message is the body it sent, reply the error it got)."""

    timestamp: str = Field(
        description="When it happened (RFC 3339, UTC).", json_schema_extra={"format": "date-time"}
    )
    user_id: str = Field(
        description="The user it was for: the body's userId (/v1: user) or an OAuth token's own "
        "user; the API key's name when neither names one."
    )
    message: str = Field(
        description="What was sent: the user's message; an action's parameters, as JSON; a "
        "chat completion's last message; a rejected request's body (its first 8 KiB)."
    )
    reply: str = Field(
        description="What came back: the model's reply or the action's result (on an error or "
        "cancel, what was generated before; empty when nothing was); a rejection's error body."
    )
    id: int = Field(description="The interaction's id in the log, unique.")
    conversation_id: str | None = Field(
        description="The conversation of a conversation turn; null for the other kinds."
    )
    kind: InteractionKind
    action: str | None = Field(description="The action called (kind action); null otherwise.")
    status: InteractionStatus
    error: str | None = Field(
        description="Why it did not end ok: the backend's failure (error), the reason the "
        "output was out of form (failed), who went away (cancelled), code: message (rejected). "
        "Null when ok."
    )
    model: str | None = Field(
        description="The model that generated the reply; null when none did (a rejected "
        "request, or a failure before any output)."
    )
    latency_ms: int = Field(
        description="How long the request took, until its outcome (reply, failure or refusal), "
        "in ms."
    )
    prompt_tokens: int = Field(
        description="Prompt tokens the model read, summed over the interaction's generations "
        "(an action may retry); cachedTokens included; 0 when no model ran."
    )
    completion_tokens: int = Field(
        description="Tokens the model generated, summed over the interaction's generations; "
        "0 when no model ran."
    )
    cached_tokens: int = Field(
        default=0,
        description="Prompt tokens the model had already processed (its prompt cache); "
        "included in promptTokens.",
    )
    finish_reason: FinishReason | None = Field(
        default=None, description=FINISH_REASON + " Null when no model generated."
    )
    http_status: int | None = Field(
        default=None, description="The HTTP status a rejected request was answered with."
    )
    endpoint: str | None = Field(
        default=None,
        description="The method and path a rejected request called, e.g. POST /api/v1/gpt/respond.",
    )


NEXT_CURSOR = (
    "The next page's cursor: pass it as the `cursor` query parameter to get the rows that "
    "follow; null on the last page."
)


class LogPageItem(LogItem):
    """One interaction of a `GET /logs` page (`api/logs.py` adds `nextCursor` to the last)."""

    # The seed's answer is an array, which has no room for a cursor beside the items.
    next_cursor: str | None = Field(
        default=None,
        description="On the last item only, when more items follow (a page may hold fewer "
        "than limit, to fit the response size limit): pass it as `cursor` to get the next "
        "page. Absent otherwise.",
    )


class ActionResponse(Shortenable):
    """The outcome of one action."""

    success: bool = Field(description="Whether the action produced an output of the required form.")
    result: str = Field(
        description="The output of the triggered GPT action. When success is false, the reason "
        "the output could not be produced."
    )
    data: Any = Field(
        default=None,
        description="The parsed value of a structured output: the label or list of labels of "
        "classify, sentiment and choice actions, the object of extract and JSON actions; null "
        "for text.",
        json_schema_extra={"nullable": True},
    )
    finish_reason: FinishReason | None = Field(
        default=None, description=FINISH_REASON + " Null when no model generated."
    )
    truncated: bool = Field(default=False, description=TRUNCATED)
    warnings: list[str] | None = Field(
        default=None,
        description="How the request was read, one sentence each: a parameter the action does "
        "not take, ignored ('parameters/length is not a parameter of summarize and was "
        "ignored'); a stand-in taken for the main text parameter; a default chosen. Absent "
        "when there is none.",
    )

    def wire(self) -> dict[str, Any]:
        """The body as JSON-ready data; `warnings` only when there are some."""
        data = super().wire()
        if not data.get("warnings"):
            data.pop("warnings", None)
        return data


class ActionInfo(Shortenable):
    """One action of the registry, as `GET /api/v1/gpt/actions` lists it (its description
    shortened, named in `truncatedFields`, only when the action alone passes the size limit)."""

    name: str = Field(description="The action's name.")
    description: str = Field(description="What the action does.")
    parameters: dict[str, Any] = Field(
        description="The JSON Schema (2020-12) its parameters are validated against.",
        json_schema_extra={"properties": {}},
    )
    builtin: bool = Field(
        description="Whether the action is built in (false: from the actions file)."
    )
    consequential: bool = Field(
        default=False,
        description="Whether ChatGPT must have the user confirm each call (`consequential: "
        "true` in the actions file).",
    )


class ActionList(Body):
    """The actions this server runs, by name, as many as fit the response size limit
    (GPTACTIONS_MAX_RESPONSE_CHARS); `nextCursor` gets the rest (also in the Link header)."""

    actions: list[ActionInfo] = Field(
        description="This page's actions, in order of name, each with its parameter schema."
    )
    next_cursor: str | None = Field(description=NEXT_CURSOR)


# The caller's own identity and data (/me, docs/gpt-actions.md).


class MeResponse(Body):
    """Who the caller is: the signed-in user of an OAuth token, or an API key."""

    user_id: str | None = Field(
        description="The signed-in user's name (OAuth); null for an API key."
    )
    authentication: str = Field(
        description="How the caller authenticated: oauth (a signed-in user's access token) or "
        "apiKey.",
        json_schema_extra={"enum": ["oauth", "apiKey"]},
    )
    name: str = Field(description="The API key's name, or oauth:<client> for a token.")
    tenant: str = Field(
        description="The caller's tenant (@users for an OAuth token): the conversations, logs "
        "and usage it reaches are this tenant's (an admin key's logs and usage: every tenant's)."
    )
    scopes: list[str] = Field(description="What the key or token may do.")


class ExportedConversation(Body):
    """One of the user's conversations; its turns are among the interactions."""

    conversation_id: str = Field(
        description="The conversation's id (its interactions' conversationId)."
    )
    created_at: str = Field(
        description="When it started (RFC 3339, UTC).", json_schema_extra={"format": "date-time"}
    )
    updated_at: str = Field(
        description="When its last turn was stored (RFC 3339, UTC).",
        json_schema_extra={"format": "date-time"},
    )


class MyDataExport(Body):
    """A page of everything stored about the user: their conversations, then their interactions,
    each newest first. A page holds what fits the response size limit
    (GPTACTIONS_MAX_RESPONSE_CHARS); `nextCursor` gets the next one (also in the Link header),
    null on the last. Following it gives every conversation and interaction exactly once."""

    user_id: str = Field(
        description="Whose data: the OAuth token's user, or the userId an API key gave."
    )
    conversations: list[ExportedConversation] = Field(
        description="This page's conversations of the user, newest first; empty once they have "
        "all been given."
    )
    interactions: list[LogItem] = Field(
        description="This page's interactions of the user (as GET /logs gives them), newest "
        "first; they come after all the conversations, so a page that conversations fill has none."
    )
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class Erasure(Body):
    """What erasing the user's data deleted."""

    user_id: str = Field(
        description="Whose data was erased: the OAuth token's user, or the userId an API key gave."
    )
    deleted_conversations: int = Field(
        description="How many of the user's conversations were deleted (0 when there were none)."
    )
    deleted_interactions: int = Field(
        description="How many of the user's interactions (rows of the log) were deleted."
    )


class UsageSums(Body):
    """Requests and tokens summed over the window."""

    requests: int = Field(description="Interactions in the log, whatever their status.")
    rejected: int = Field(
        description="Of those, requests refused before the model (a 4xx, a limit's 429 say)."
    )
    prompt_tokens: int = Field(
        description="Prompt tokens the model read in those interactions, summed (cached ones "
        "included)."
    )
    completion_tokens: int = Field(
        description="Tokens the model generated in those interactions, summed."
    )
    total_tokens: int = Field(description="Prompt and completion tokens.")


class KeyUsage(UsageSums):
    """One API key's usage (or an OAuth client's, for its users' calls)."""

    key_id: str | None = Field(description="The key's id; null for the command line's calls.")
    name: str | None = Field(description="The key's name; null when the key is unknown here.")


class UserUsage(UsageSums):
    """One user's usage, within a tenant."""

    tenant: str = Field(description="The tenant the user's interactions are in.")
    user_id: str = Field(description="The user's id (the interactions' userId).")


class UsageResponse(Body):
    """Requests and tokens per key and per user over a window of the log, the most tokens first."""

    since: str = Field(
        description="Start of the window (RFC 3339, UTC), included.",
        json_schema_extra={"format": "date-time"},
    )
    until: str = Field(
        description="End of the window (RFC 3339, UTC), excluded.",
        json_schema_extra={"format": "date-time"},
    )
    total: UsageSums
    keys: list[KeyUsage] = Field(
        description="Usage per API key (an OAuth client counts as one), most tokens first, at "
        "most `limit` of them."
    )
    users: list[UserUsage] = Field(
        description="Usage per user and tenant, most tokens first, at most `limit` of them."
    )
    truncated: bool = Field(
        description="Whether more keys or users used the window than `limit` lets through, "
        "or than fit the response size limit (GPTACTIONS_MAX_RESPONSE_CHARS): the users with "
        "the fewest tokens are left out first, then the keys; `total` still counts them."
    )


def error_schema() -> dict[str, Any]:
    """The one shape of every error (`api/errors.py`), as the document describes it."""
    return {
        "type": "object",
        "required": ["error"],
        "description": "The one shape of every error this API returns.",
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "description": "What went wrong: a code, a message, and the input's problems.",
                "properties": {
                    "code": {"type": "string", "description": "Stable machine-readable code."},
                    "message": {
                        "type": "string",
                        "maxLength": MAX_ERROR_TEXT,
                        "description": "What went wrong, for people.",
                    },
                    "details": {
                        "type": "array",
                        "maxItems": MAX_DETAILS,
                        "description": "Each problem with the input, where and what (past "
                        f"{MAX_DETAILS}, the last one says how many more there were).",
                        "items": {
                            "type": "object",
                            "required": ["pointer", "message"],
                            "properties": {
                                "pointer": {
                                    "type": "string",
                                    "description": "JSON pointer to the field, e.g. /message.",
                                },
                                "message": {
                                    "type": "string",
                                    "description": "What is wrong there, e.g. must not be null.",
                                },
                            },
                        },
                    },
                },
            }
        },
    }


class OpenAPI30(GenerateJsonSchema):
    """JSON Schema as OpenAPI 3.0.3 writes it: `nullable` for optional values, no field titles."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        """`X | None` as X with `nullable: true`."""
        inner = self.generate_inner(schema["schema"])
        return {**inner, "nullable": True}

    def field_title_should_be_set(self, schema: Any) -> bool:
        """No titles: the document's names already say what each is."""
        return False


def without_ref_siblings(schema: Any, definitions: dict[str, Any]) -> Any:
    """`schema` without keys beside a `$ref`, which OpenAPI 3.0 ignores.

    Pydantic writes an optional enum field as `{"$ref": ..., "nullable": true}`: to a strict
    client `null` is then invalid. OpenAPI 3.0.3 adds `null` only where `type` is given in the
    same schema, and to an `enum` only when it lists `null`; so a nullable `$ref` to an enum (in
    `definitions`) is written out as that enum with `null` among its values, and any other
    `$ref` with keys beside it is wrapped in an `allOf`.
    """
    if isinstance(schema, list):
        return [without_ref_siblings(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: without_ref_siblings(value, definitions) for key, value in schema.items()}
    if "$ref" not in out or len(out) == 1:
        return out
    ref = out.pop("$ref")
    target = definitions.get(ref.removeprefix(COMPONENTS.format(model="")), {})
    if out.get("nullable") and "enum" in target and "type" in target:
        inline = {k: v for k, v in target.items() if k not in ("title", "description")}
        return {**inline, **out, "enum": [*target["enum"], None]}
    return {"allOf": [{"$ref": ref}], **out}
