"""The MCP server: every action, and `converse`, as tools over streamable HTTP at /mcp or stdio.

Built on the official `mcp` SDK's low-level server, because the tools come from the registry at
run time. A tool call goes through the same services as its REST twin (so it is checked, limited
and logged the same way); the caller is the API key of the HTTP request that carried the call.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import jsonschema
import mcp_types as types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gptactions import __version__
from gptactions.api.actions import action_body
from gptactions.api.conversations import reply_body
from gptactions.api.deps import get_principal, lacks_scope
from gptactions.api.errors import (
    DATABASE_UNAVAILABLE,
    backend_status,
    error_body,
    validation_problems,
)
from gptactions.api.forwarded import public_origin
from gptactions.api.mcp_envelope import (
    as_json,
    decoded,
    envelope_refusal,
    media_refusal,
    refused,
    replaying,
    request_id,
    retry_after,
)
from gptactions.api.oauth import resource_metadata_url
from gptactions.api.schemas import NUL_FREE_PATTERN, ConversationRequest
from gptactions.llm.base import BackendError
from gptactions.runtime import Runtime
from gptactions.services.actions import ActionCall
from gptactions.services.actions.registry import ActionDefinition, schema_problems
from gptactions.services.actions.userdefined import PromptAction
from gptactions.services.conversations import Turn
from gptactions.services.errors import Problem, ServiceError, invalid_input
from gptactions.services.keys import Principal
from gptactions.services.rejections import Rejection, record_rejection
from gptactions.store.outage import DatabaseUnavailable

log = logging.getLogger(__name__)

CONVERSE = "converse"
PRINCIPAL_KEY = "gptactions.principal"
"""Where the HTTP endpoint leaves the authenticated caller in the ASGI scope."""
UNEXPECTED = "is not a parameter of this tool"
"""What a tool's call is told of an argument its `inputSchema` does not allow."""

CONVERSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "userId": {
            "type": "string",
            "minLength": 1,
            "pattern": NUL_FREE_PATTERN,
            "description": "Who is talking.",
        },
        "message": {"type": "string", "minLength": 1, "description": "The user's message."},
        "conversationId": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": NUL_FREE_PATTERN,
            "description": "Continue this conversation; omit it to start a new one.",
        },
        # userId's and message's maxLength, maxTokens' maximum: the server's (`_converse_checks`).
        "maxTokens": {"type": "integer", "minimum": 1, "description": "Most tokens to generate."},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "model": {"type": "string", "description": "A configured backend's name."},
    },
    "required": ["userId", "message"],
    "additionalProperties": False,
}

SIGNED_IN_CONVERSE_SCHEMA: dict[str, Any] = {
    **CONVERSE_SCHEMA,
    "properties": {
        **CONVERSE_SCHEMA["properties"],
        "userId": {
            **CONVERSE_SCHEMA["properties"]["userId"],
            "description": "Leave it out: the signed-in user (another user's name is refused).",
        },
    },
    "required": ["message"],
}
"""`converse` for an OAuth token, which is its user: a client filling a required userId would
have to guess the user's name."""


@functools.cache
def _converse_checks(
    max_tokens: int, max_user_id: int, max_message: int
) -> tuple[jsonschema.Draft202012Validator, jsonschema.Draft202012Validator]:
    """`converse`'s schemas (for an API key, for a signed-in user) with the server's limits
    (GPTACTIONS_MAX_TOKENS_LIMIT, _MAX_USER_ID_LENGTH, _MAX_MESSAGE_LENGTH), as the REST
    document states them: as their callers are shown them and held to."""
    limits = {
        "maxTokens": {"maximum": max_tokens},
        "userId": {"maxLength": max_user_id},
        "message": {"maxLength": max_message},
    }

    def limited(schema: dict[str, Any]) -> dict[str, Any]:
        properties = schema["properties"]
        bounded = {name: {**properties[name], **limit} for name, limit in limits.items()}
        return {**schema, "properties": {**properties, **bounded}}

    return (
        jsonschema.Draft202012Validator(limited(CONVERSE_SCHEMA)),
        jsonschema.Draft202012Validator(limited(SIGNED_IN_CONVERSE_SCHEMA)),
    )


PrincipalOf = Callable[[ServerRequestContext[Any, Any]], Principal | None]


def principal_from_request(ctx: ServerRequestContext[Any, Any]) -> Principal | None:
    """The caller the HTTP endpoint authenticated for the request carrying this message."""
    request = ctx.request
    if isinstance(request, Request):
        principal = request.scope.get(PRINCIPAL_KEY)
        if isinstance(principal, Principal):
            return principal
    return None


def build_mcp_server(runtime: Runtime, principal_of: PrincipalOf) -> Server[Any]:
    """The MCP server: the registry's actions and `converse` as tools.

    A caller sees the tools its key's scopes allow. An action named `converse` stays a REST-only
    action, as the conversation tool has that name.
    """

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        principal = principal_of(ctx)
        tools = []
        if principal is not None and principal.allows("chat"):
            tools.append(
                types.Tool(
                    name=CONVERSE,
                    title=CONVERSE_ANNOTATIONS.title,
                    description="Start a conversation with the model, or continue one by its id.",
                    input_schema=_converse_check(runtime, principal).schema,
                    annotations=CONVERSE_ANNOTATIONS,
                )
            )
        if principal is not None and principal.allows("actions"):
            tools.extend(action_tool(d) for d in runtime.registry if d.name != CONVERSE)
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        principal = principal_of(ctx)
        if principal is None:
            error = ServiceError(
                "an API key or an OAuth access token is required", 401, "unauthorized"
            )
            return _tool_error(error)
        name, arguments = params.name, params.arguments or {}
        if name != CONVERSE and name not in runtime.registry:
            raise MCPError(code=types.INVALID_PARAMS, message=f"unknown tool {name!r}")
        scope = "chat" if name == CONVERSE else "actions"
        try:
            if not principal.allows(scope):
                raise lacks_scope(principal, scope)
            if name == CONVERSE:
                return await _converse(runtime, principal, arguments)
            return await _run_action(runtime, principal, name, arguments)
        except ServiceError as error:
            refused = _tool_error(error)
            await _record_refusal(runtime, principal, name, arguments, error, refused)
            return refused
        except BackendError as error:
            status, code = backend_status(error)
            return _tool_error(ServiceError(error.message, status, code))

    return Server(
        "gptactions",
        version=__version__,
        instructions="Tools of a gptactions server: its actions, and `converse` to chat.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


CONVERSE_ANNOTATIONS = types.ToolAnnotations(
    title="Chat with the model",
    read_only_hint=False,
    destructive_hint=False,
    idempotent_hint=False,
    open_world_hint=False,
)
"""`converse` adds a turn to a conversation (a new one, or the one named) that its user can
read back: an update, but only an additive one (nothing is overwritten or deleted), and not
idempotent (the same message twice is two turns). Its world is the server's own."""

CONSEQUENTIAL = " Consequential: confirm each call with the user before running it."
"""Ends a consequential action's description, as "ChatGPT asks the user before running it."
ends its variant's in the OpenAPI document (for MCP, it is the client's to ask)."""


def action_tool(definition: ActionDefinition) -> types.Tool:
    """An action as its tool: name, title, description, `inputSchema` and annotations."""
    annotations = action_annotations(definition)
    confirm = CONSEQUENTIAL if definition.consequential else ""
    return types.Tool(
        name=definition.name,
        title=annotations.title,
        description=definition.description + confirm,
        input_schema=tool_input_schema(definition.parameters),
        annotations=annotations,
    )


def action_annotations(definition: ActionDefinition) -> types.ToolAnnotations:
    """What an action's tool says of its effects: MCP's ToolAnnotations (2025-03-26), hints
    whose defaults (not read-only, destructive, open world) a client must assume without them.

    The rule, from what the registry knows of the action:

    - `consequential` (the actions file's `consequential: true`, which the OpenAPI document
      states as `x-openai-isConsequential: true`): its author says each call has effects the
      user should confirm (it orders, sends, deletes), which the server cannot see or bound.
      The tool keeps MCP's cautious defaults: not read-only, destructive, not idempotent,
      open world.
    - Otherwise an action that only generates text (a built-in, or a prompt template of the
      actions file: none calls out to a URL) is read-only, not destructive, idempotent, closed
      world: it changes nothing the caller owns (its call is recorded in the log, as every
      call is) and reaches no external entity. Which model writes the text (embedded, or an
      upstream one) is not the tool's world.
    - Any other (a handler registered in code, whose effects are not known): not read-only,
      not destructive (`consequential` is how an action says it is), not idempotent, open
      world.
    """
    title = tool_title(definition.name)
    if definition.consequential:
        return types.ToolAnnotations(
            title=title,
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=True,
        )
    generates_only = definition.builtin or isinstance(definition.handler, PromptAction)
    return types.ToolAnnotations(
        title=title,
        read_only_hint=generates_only,
        destructive_hint=False,
        idempotent_hint=generates_only,
        open_world_hint=not generates_only,
    )


_WORDS = re.compile(r"(?:[A-Z]{2,}s(?![a-z])|[A-Z]+(?![a-z])|[A-Z]?[a-z]+)[0-9]*|[0-9]+")
"""The words of an action's name: `generateCode`, `generate_code` and `generate-code` alike."""


def tool_title(name: str) -> str:
    """An action's name as a human title: `generateCode` is "Generate code", `listURLs` "List
    URLs" (an acronym keeps its capitals)."""
    words = [w if sum(c.isupper() for c in w) > 1 else w.lower() for w in _WORDS.findall(name)]
    title = " ".join(words) or name
    return title[0].upper() + title[1:]


def tool_input_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """An action's parameter schema as its tool's `inputSchema`, which its calls are held to.

    MCP requires `type: object` at the root (actions' schemas are objects). A schema that says
    nothing of other properties is closed (`additionalProperties: false`): REST ignores a
    parameter the action does not take, with a warning, as the seed's `parameters` admit any;
    a tool's caller reads the schema, and is told instead. A schema that does say (its own
    `additionalProperties` or `unevaluatedProperties`) is kept as written.
    """
    schema = parameters if parameters.get("type") == "object" else {"type": "object", **parameters}
    if "additionalProperties" in schema or "unevaluatedProperties" in schema:
        return schema
    return {**schema, "additionalProperties": False}


async def _run_action(
    runtime: Runtime, principal: Principal, name: str, arguments: dict[str, Any]
) -> types.CallToolResult:
    # The tool's schema first (as `converse`'s), then the service's checks; what either says,
    # it says of the arguments, at the top level (REST's are under `/parameters`).
    schema = tool_input_schema(runtime.registry.get(name).parameters)
    check = jsonschema.Draft202012Validator(schema)
    problems = schema_problems(check, arguments, at=(), unexpected=UNEXPECTED)
    if problems:
        raise invalid_input(*problems)
    # An OAuth token acts as its user: the call is theirs (their export, their erasure).
    call = ActionCall(name, arguments, user_id=principal.acting_as(None))
    try:
        outcome = await runtime.actions.run(principal, call)
    except ServiceError as error:
        raise _of_arguments(error) from None
    # REST's body (finishReason, truncated, warnings...), within the same size limit.
    warnings = [_argument_warning(w) for w in outcome.warnings]
    body = action_body(outcome, runtime.settings.max_response_chars, warnings)
    return types.CallToolResult(
        content=[_as_text(body)], structured_content=body, is_error=not outcome.success
    )


def _as_text(body: dict[str, Any]) -> types.TextContent:
    """A result's structured content as its text, as MCP asks of a tool that returns both
    (2025-06-18, "Structured Content"): the clients that give their model only the text
    (many do) give it the conversation's id, an extraction's `data`, `truncated`, too."""
    return types.TextContent(text=json.dumps(body, ensure_ascii=False))


_PARAMETERS = "/parameters"
"""Where REST's body holds an action's parameters, which a tool's call has as its arguments."""


def _argument_pointer(pointer: str) -> str:
    """A pointer into REST's `parameters`, as one into the tool's arguments."""
    if pointer == _PARAMETERS or pointer.startswith(_PARAMETERS + "/"):
        return pointer[len(_PARAMETERS) :]
    return pointer


def _argument_warning(warning: str) -> str:
    """A warning of the actions service (`parameters/length is not a parameter...`), naming the
    argument by its pointer (`/length is not...`)."""
    prefix = _PARAMETERS[1:] + "/"
    return warning[len(prefix) - 1 :] if warning.startswith(prefix) else warning


def _of_arguments(error: ServiceError) -> ServiceError:
    """An error of the actions service, its problems pointing into the tool's arguments."""
    details = [Problem(_argument_pointer(p.pointer), p.message) for p in error.details]
    if details == error.details:
        return error
    if error.message == invalid_input(*error.details).message:  # said by its first problem
        return replace(error, message=invalid_input(*details).message, details=details)
    return replace(error, details=details)


def _converse_check(runtime: Runtime, principal: Principal) -> jsonschema.Draft202012Validator:
    """The schema of `converse` that `principal` is shown, and held to."""
    settings = runtime.settings
    api_key, signed_in = _converse_checks(
        settings.max_tokens_limit, settings.max_user_id_length, settings.max_message_length
    )
    return api_key if principal.user_id is None else signed_in


async def _converse(
    runtime: Runtime, principal: Principal, arguments: dict[str, Any]
) -> types.CallToolResult:
    # The schema first (a property it does not name is refused, as its additionalProperties
    # says; REST's body ignores one), then REST's own rules in REST's words.
    check = _converse_check(runtime, principal)
    problems = schema_problems(check, arguments, at=(), unexpected=UNEXPECTED)
    if problems:
        raise invalid_input(*problems)
    try:
        request = ConversationRequest.model_validate(arguments)
    except ValidationError as error:
        # As REST says it (`errors.validation_problems`): "must not be empty", not pydantic's.
        raise invalid_input(*validation_problems(error.errors())) from None
    user_id = principal.acting_as(request.userId)
    if user_id is None:
        raise ServiceError(
            "Invalid input: userId: is required", details=[Problem("/userId", "is required")]
        )
    request.check_limits(runtime.settings)
    turn = Turn(
        user_id=user_id,
        message=request.message,
        conversation_id=request.conversationId,
        max_tokens=request.maxTokens,
        temperature=request.temperature,
        model=request.model,
    )
    if request.conversationId is None:
        reply = await runtime.conversations.start(principal, turn)
    else:
        reply = await runtime.conversations.respond(principal, turn)
    # REST's body (finishReason, truncated, cachedTokens...), within the same size limit.
    body = reply_body(reply, runtime.settings.max_response_chars)
    return types.CallToolResult(content=[_as_text(body)], structured_content=body)


async def _record_refusal(
    runtime: Runtime,
    principal: Principal,
    name: str,
    arguments: dict[str, Any],
    error: ServiceError,
    refused: types.CallToolResult,
) -> None:
    """A call refused before the model, in the caller's log as REST's are (kind `rejected`):
    its arguments as the body, `POST /mcp?tool=<name>` as the endpoint."""
    if not 400 <= error.status < 500:
        return
    body = json.dumps(arguments, ensure_ascii=False).encode()
    rejection = Rejection(
        method="POST",
        path=f"/mcp?tool={name}",
        status=error.status,
        body=body,
        body_size=len(body),
        answer=json.dumps(refused.structured_content, ensure_ascii=False).encode(),
    )
    await record_rejection(runtime.log, principal, rejection)


def _tool_error(error: ServiceError) -> types.CallToolResult:
    """A failed call as a tool result, so the model that called it can read why and retry:
    when, for a limit (`retryAfter`, seconds, as the endpoint's own 429 says it in `data`)."""
    body = error_body(error.status, error.message, code=error.code, details=error.details)
    wait = retry_after(error)
    if wait is not None:
        body["error"]["retryAfter"] = wait
    return types.CallToolResult(content=[_as_text(body)], structured_content=body, is_error=True)


class _StatelessTerminations(logging.Filter):
    """Leaves out the SDK's "Terminating session: None", logged at INFO after every stateless
    request (each one is a transport of its own, ended once answered): noise, once a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Terminating session: None"


def _quiet_stateless_terminations() -> None:
    sdk = logging.getLogger("mcp.server.streamable_http")
    if not any(isinstance(f, _StatelessTerminations) for f in sdk.filters):
        sdk.addFilter(_StatelessTerminations())


class McpEndpoint:
    """`/mcp`: authenticates the API key like the REST routes, checks the message's envelope
    (`mcp_envelope`: what it refuses is a JSON-RPC error), then hands over to the SDK.

    Stateless and answering in JSON, so any worker of a multi-process server can take any
    request. The SDK's session manager must run inside the app's lifespan: see `running`.
    Only POST is routed here (`app.py`): a stateless server offers no stream of its own (GET)
    and has no session to end (DELETE), and Streamable HTTP lets it answer those with 405; the
    SDK would hold a GET open as an event stream that never carries anything.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.server = build_mcp_server(runtime, principal_from_request)
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run a session manager for the app's lifetime (a manager runs only once).

        The manager holds a task group, which must end in the task that began it; an app's
        lifespan may start in one task and stop in another (test fixtures do), so the manager
        runs in a task of its own.
        """
        manager = StreamableHTTPSessionManager(
            self.server,
            stateless=True,
            json_response=True,
            max_request_body_size=self.runtime.settings.max_body_bytes,
        )
        _quiet_stateless_terminations()
        ready = asyncio.Event()
        stop = asyncio.Event()

        async def run() -> None:
            async with manager.run():
                self._manager = manager
                ready.set()
                try:
                    await stop.wait()
                finally:
                    self._manager = None

        task = asyncio.create_task(run(), name="mcp-session-manager")
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiting.cancel()
            task.result()  # raises why the manager could not start
        try:
            yield
        finally:
            stop.set()
            await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        # Read before anything is answered, so that every answer names the request it is for
        # (BodyGuard bounds it); the SDK then reads it again (`replaying`).
        body = await request.body()
        message = decoded(body)
        answering = request_id(message)
        if self._manager is None:
            error = ServiceError("the MCP endpoint is not running", 503, "unavailable")
            await refused(error, answering)(scope, receive, send)
            return
        try:
            principal = await get_principal(request, self.runtime)
        except DatabaseUnavailable as outage:
            error = ServiceError(
                DATABASE_UNAVAILABLE,
                503,
                "database_unavailable",
                headers={"Retry-After": str(outage.retry_after)},
            )
            await refused(error, answering)(scope, receive, send)
            return
        except ServiceError as error:
            if error.status == 401:  # say where an MCP client learns how to get a token
                headers = dict(error.headers or {})
                base = public_origin(request, self.runtime.settings)
                metadata = resource_metadata_url(base, "/mcp")
                challenge = headers.get("WWW-Authenticate", 'Bearer realm="gptactions"')
                headers["WWW-Authenticate"] = f'{challenge}, resource_metadata="{metadata}"'
                error = replace(error, headers=headers)
            await refused(error, answering)(scope, receive, send)
            return
        refusal = media_refusal(request.headers, answering) or envelope_refusal(
            request.headers, message
        )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        token = AccessToken(
            token=principal.key_id, client_id=principal.key_id, scopes=sorted(principal.scopes)
        )
        scope = {**as_json(scope), PRINCIPAL_KEY: principal, "user": AuthenticatedUser(token)}
        await self._manager.handle_request(scope, replaying(body, receive), send)


async def serve_stdio(runtime: Runtime, principal: Principal) -> None:
    """Serve the tools on standard input and output, as `principal`, until the input ends."""
    from mcp.server.stdio import stdio_server

    server = build_mcp_server(runtime, lambda _ctx: principal)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
