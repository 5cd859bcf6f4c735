"""The OpenAI-compatible API's part of the served document: /v1 under its own tag.

Written against api/openai_compat.py and api/openai_schemas.py; its errors have OpenAI's shape
(`OpenAIError`), not the API's one shape, since that is what OpenAI clients parse.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

from gptactions.api import sse
from gptactions.api.openai_compat import PREFIX, TAG, router
from gptactions.api.openapi_query import ERROR_HEADERS, header_refs
from gptactions.api.schemas import NUL_FREE_PATTERN
from gptactions.config import Settings


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_ERRORS = {
    "400": "Invalid request (type invalid_request_error), a prompt beyond the context window, "
    "or a JSON Schema the embedded model's grammar cannot follow.",
    "401": "Missing, unknown or revoked API key (code invalid_api_key).",
    "403": "The API key lacks the chat scope.",
    "404": "No such model (code model_not_found).",
    "413": "The body is larger than the server's limit.",
    "415": "The body is not JSON, or is compressed (Content-Encoding).",
    "429": "The API key's rate limit is exceeded (code rate_limit_exceeded); see Retry-After.",
    "500": "Internal error.",
    "502": "The model backend answered badly.",
    "503": "Unavailable for now: every model backend is down or saturated, the database is "
    "unreachable, or the server is restarting; retry after the Retry-After seconds.",
    "504": "The model backend did not answer in time.",
}


def _operation_id(path: str, method: str) -> str:
    """The operation id of the route that answers `method path`, so the two cannot drift."""
    route = next(
        r
        for r in router.routes
        if isinstance(r, APIRoute) and r.path == PREFIX + path and method in (r.methods or ())
    )
    return str(route.operation_id)


def _errors(codes: list[str]) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/OpenAIError{code}"} for code in codes}


# An object of any form; listing (no) properties keeps GPT Actions' importer content.
_FREE_FORM: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": True}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


# The messages of each role (`openai_schemas.MessageIn`), by the roles each takes.
_MESSAGES = {
    "ChatCompletionSystemMessage": ("system", "developer"),
    "ChatCompletionUserMessage": ("user",),
    "ChatCompletionAssistantMessage": ("assistant",),
    "ChatCompletionToolMessage": ("tool",),
    "ChatCompletionFunctionMessage": ("function",),
}


def _function(required: list[str], **extra: str) -> dict[str, Any]:
    """A call's function: its name, and its arguments as JSON (a string, "" when left out)."""
    arguments: dict[str, Any] = {"type": "string", "description": "The arguments, as JSON."}
    if "arguments" not in required:
        arguments["default"] = ""
    return {
        "type": "object",
        "required": required,
        **extra,
        "properties": {"name": {"type": "string"}, "arguments": arguments},
    }


def _schemas(settings: Settings, models: list[str]) -> dict[str, Any]:
    tokens = {"type": "integer", "minimum": 1, "maximum": settings.max_tokens_limit}
    text_part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    }
    parts = {"type": "array", "minItems": 1, "items": text_part}
    content = {"oneOf": [{"type": "string"}, parts]}
    # `nullable` beside a oneOf is ignored (OAS 3.0.3): null is one of the choices.
    content_or_null = {"oneOf": [{"type": "string", "nullable": True}, parts]}
    tool_call_in = {
        "type": "object",
        "required": ["id", "function"],
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["function"], "default": "function"},
            "function": _function(["name"]),
        },
    }
    function_call_in = _function(
        ["name"], description="OpenAI's legacy form of a call: read as a tool call."
    )
    function_call = _function(
        ["name", "arguments"],
        description="The call, in OpenAI's legacy form (a request with functions).",
    )
    tool_call = {
        "type": "object",
        "required": ["id", "type", "function"],
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["function"]},
            "function": _function(["name", "arguments"]),
        },
    }
    usage = {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
            "prompt_tokens_details": {
                "type": "object",
                "required": ["cached_tokens"],
                "properties": {
                    "cached_tokens": {
                        "type": "integer",
                        "description": "Prompt tokens the model had processed already (its "
                        "prompt cache): the earlier turns of a conversation, say.",
                    }
                },
            },
        },
    }
    finish = {
        "type": "string",
        "enum": ["stop", "length", "tool_calls", "content_filter", "function_call"],
        "description": "function_call: a call, answering a request with functions.",
    }
    penalty = {"type": "number", "minimum": -2, "maximum": 2, "default": 0}
    return {
        "OpenAIError": {
            "type": "object",
            "required": ["error"],
            "description": "OpenAI's error shape: the one errors under /v1 have.",
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string", "description": "e.g. invalid_request_error."},
                        "param": _nullable({"type": "string"}),
                        "code": _nullable({"type": "string"}),
                    },
                }
            },
        },
        "ChatCompletionMessage": {
            "description": "A message: its role says which fields it has, as in OpenAI's schema "
            "(a field of another role is ignored). Only text content is read.",
            "oneOf": [_ref(name) for name in _MESSAGES],
            "discriminator": {
                "propertyName": "role",
                "mapping": {
                    role: f"#/components/schemas/{name}"
                    for name, roles in _MESSAGES.items()
                    for role in roles
                },
            },
        },
        "ChatCompletionSystemMessage": {
            "type": "object",
            "required": ["role", "content"],
            "description": "Instructions; developer is read as system.",
            "properties": {
                "role": {"type": "string", "enum": ["system", "developer"]},
                "content": content,
                "name": {"type": "string"},
            },
        },
        "ChatCompletionUserMessage": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": ["user"]},
                "content": content,
                "name": {"type": "string"},
            },
        },
        "ChatCompletionAssistantMessage": {
            "type": "object",
            "required": ["role"],
            "description": "An earlier reply: its content, or the tool_calls it made, or both.",
            "properties": {
                "role": {"type": "string", "enum": ["assistant"]},
                "content": content_or_null,
                "name": {"type": "string"},
                "tool_calls": {"type": "array", "items": tool_call_in},
                "function_call": function_call_in,
            },
            "anyOf": [
                {"required": ["content"], "properties": {"content": content}},
                {"required": ["tool_calls"], "properties": {"tool_calls": {"minItems": 1}}},
                {"required": ["function_call"]},
            ],
        },
        "ChatCompletionToolMessage": {
            "type": "object",
            "required": ["role", "content", "tool_call_id"],
            "description": "What a tool answered to the call tool_call_id names.",
            "properties": {
                "role": {"type": "string", "enum": ["tool"]},
                "content": content,
                "tool_call_id": {"type": "string", "minLength": 1},
            },
        },
        "ChatCompletionFunctionMessage": {
            "type": "object",
            "required": ["role", "name", "content"],
            "description": "OpenAI's legacy form of a tool's answer: read as the answer to the "
            "latest call of the function name.",
            "properties": {
                "role": {"type": "string", "enum": ["function"]},
                "name": {"type": "string", "minLength": 1},
                "content": content_or_null,
            },
        },
        "ChatCompletionFunction": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 64,
                    "pattern": "^[A-Za-z0-9_-]+$",
                },
                "description": {"type": "string"},
                "parameters": {**_FREE_FORM, "description": "A JSON Schema."},
                "strict": {"type": "boolean"},
            },
        },
        "ChatCompletionTool": {
            "type": "object",
            "required": ["type", "function"],
            "properties": {
                "type": {"type": "string", "enum": ["function"]},
                "function": _ref("ChatCompletionFunction"),
            },
        },
        "ChatCompletionRequest": {
            "type": "object",
            "required": ["messages"],
            "example": {
                "model": models[0] if models else "default",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": min(64, settings.max_tokens_limit),
                "temperature": 0,
            },
            "properties": {
                "model": {
                    "type": "string",
                    "enum": [*models, "default"],
                    "description": "A backend's name (GET /v1/models) or its model's name; "
                    "the default backend when absent or 'default'.",
                },
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "items": _ref("ChatCompletionMessage"),
                },
                "max_tokens": _nullable(
                    {
                        **tokens,
                        "description": "Most tokens to generate. Without it (or "
                        "max_completion_tokens), as many as the context window leaves after the "
                        f"messages, up to {settings.max_tokens_limit} (the server's "
                        "GPTACTIONS_MAX_TOKENS_LIMIT); only messages that fill the window are a "
                        "400 context_length_exceeded.",
                    }
                ),
                "max_completion_tokens": _nullable({**tokens, "description": "As max_tokens."}),
                "temperature": _nullable(
                    {"type": "number", "minimum": 0, "maximum": 2, "default": 1}
                ),
                "top_p": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
                "frequency_penalty": _nullable(
                    {
                        **penalty,
                        "description": "Lowers each token's logit by this times its count in "
                        "the reply so far (a negative value raises it). Applied by the embedded "
                        "model's sampler, after its own repeat penalty; passed to upstreams.",
                    }
                ),
                "presence_penalty": _nullable(
                    {
                        **penalty,
                        "description": "Lowers the logit of each token already in the reply by "
                        "this (a negative value raises it). Applied by the embedded model's "
                        "sampler; passed to upstreams.",
                    }
                ),
                "logit_bias": _nullable(
                    {
                        "type": "object",
                        "properties": {},
                        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
                        "description": "Token id (of the model's own tokenizer) to a bias added to "
                        "its logit at every step: -100 all but bans it, 100 all but forces it. "
                        "A key that is not a token id, a bias out of range, or (on the embedded "
                        "model) a token beyond its vocabulary is a 400 with param logit_bias. "
                        "Passed to upstreams.",
                    }
                ),
                "logprobs": _nullable(
                    {
                        "type": "boolean",
                        "enum": [False],
                        "description": "Log-probabilities are not returned: true is a 400 with "
                        "param logprobs.",
                    }
                ),
                "top_logprobs": _nullable(
                    {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 0,
                        "description": "Not supported: above 0 is a 400 with param top_logprobs.",
                    }
                ),
                "seed": _nullable({"type": "integer", "format": "int64"}),
                "stop": _nullable(
                    {
                        "oneOf": [
                            {"type": "string"},
                            {"type": "array", "maxItems": 4, "items": {"type": "string"}},
                        ]
                    }
                ),
                "n": _nullable(
                    {"type": "integer", "minimum": 1, "maximum": 1, "description": "Only 1."}
                ),
                "stream": _nullable(
                    {"type": "boolean", "description": "Stream chat.completion.chunk events."}
                ),
                "stream_options": _nullable(
                    {"type": "object", "properties": {"include_usage": {"type": "boolean"}}}
                ),
                "response_format": _nullable(
                    {
                        "type": "object",
                        "required": ["type"],
                        "description": "json_object or json_schema: grammar-constrained on "
                        "the embedded model (a schema its grammar cannot follow is a 400), "
                        "passed through to upstreams.",
                        "properties": {
                            "type": {
                                "type": "string",
                                "enum": ["text", "json_object", "json_schema"],
                            },
                            "json_schema": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {
                                        "type": "string",
                                        "minLength": 1,
                                        "maxLength": 64,
                                        "pattern": "^[A-Za-z0-9_-]+$",
                                    },
                                    "description": {"type": "string"},
                                    "schema": {**_FREE_FORM, "description": "A JSON Schema."},
                                    "strict": {"type": "boolean"},
                                },
                            },
                        },
                    }
                ),
                "tools": _nullable(
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 128,
                        "items": _ref("ChatCompletionTool"),
                    }
                ),
                "tool_choice": _nullable(
                    {
                        "description": "Passed through to upstreams; on the embedded model, "
                        "'required' or a named function is answered with a call.",
                        "oneOf": [
                            {"type": "string", "enum": ["none", "auto", "required"]},
                            {
                                "type": "object",
                                "required": ["type", "function"],
                                "properties": {
                                    "type": {"type": "string", "enum": ["function"]},
                                    "function": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": {"name": {"type": "string"}},
                                    },
                                },
                            },
                        ],
                    }
                ),
                "functions": _nullable(
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 128,
                        "items": _ref("ChatCompletionFunction"),
                        "description": "OpenAI's legacy form of tools, mapped as OpenAI maps it: "
                        "each function is a tool, function_call the tool_choice. A call is "
                        "answered in the legacy form: message.function_call (the first call; "
                        "function_call pieces when streamed) and finish_reason function_call. "
                        "Not with tools.",
                    }
                ),
                "function_call": _nullable(
                    {
                        "description": "The legacy tool_choice: none, auto, or {name} to call "
                        "that function (which must be among functions). Not with tool_choice.",
                        "oneOf": [
                            {"type": "string", "enum": ["none", "auto"]},
                            {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                        ],
                    }
                ),
                "user": _nullable(
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 256,
                        "pattern": NUL_FREE_PATTERN,
                        "description": "The end user, for the log (the key's name when absent "
                        "or null).",
                    }
                ),
            },
        },
        "ChatCompletion": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {
                "id": {"type": "string"},
                "object": {"type": "string", "enum": ["chat.completion"]},
                "created": {"type": "integer"},
                "model": {"type": "string", "description": "The backend that answered."},
                "system_fingerprint": _nullable({"type": "string"}),
                "choices": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "message", "finish_reason"],
                        "properties": {
                            "index": {"type": "integer"},
                            "message": {
                                "type": "object",
                                "required": ["role", "content"],
                                "properties": {
                                    "role": {"type": "string", "enum": ["assistant"]},
                                    "content": _nullable({"type": "string"}),
                                    "refusal": _nullable({"type": "string"}),
                                    "tool_calls": {"type": "array", "items": tool_call},
                                    "function_call": function_call,
                                },
                            },
                            "logprobs": _nullable({**_FREE_FORM, "description": "Always null."}),
                            "finish_reason": finish,
                        },
                    },
                },
                "usage": usage,
            },
        },
        "Model": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {
                "id": {"type": "string", "description": "A configured backend's name."},
                "object": {"type": "string", "enum": ["model"]},
                "created": {"type": "integer"},
                "owned_by": {"type": "string"},
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": {"type": "array", "items": _ref("Model")},
            },
        },
    }


_STREAM = {
    # OpenAI's events have no `event:` line, so each is a `message`.
    "schema": sse.event_schema(
        ["message"],
        "With stream: true, Server-Sent Events in OpenAI's form: "
        '`data: {"object": "chat.completion.chunk", ...}` events, the last with finish_reason, '
        "then (with stream_options.include_usage) a chunk with no choices and the usage, then "
        "`data: [DONE]`. A failure midway is an event with an OpenAI error.",
    )
}


def add_openai_paths(doc: dict[str, Any], settings: Settings, models: list[str]) -> None:
    """Describe /v1 in the document, under its own tag."""
    components = doc["components"]
    components["schemas"].update(_schemas(settings, models))
    components.setdefault("responses", {}).update(
        {
            f"OpenAIError{code}": {
                "description": description,
                "headers": header_refs(*ERROR_HEADERS.get(code, ())),
                "content": _json(_ref("OpenAIError")),
            }
            for code, description in _ERRORS.items()
        }
    )
    doc.setdefault("tags", []).append(
        {
            "name": TAG,
            "description": "OpenAI's Chat Completions and Models API: point any OpenAI client "
            f"at {PREFIX} with one of this server's keys.",
        }
    )
    # 400: two Authorization headers, at least; 503: the database (the key check), a restart.
    always = ["400", "401", "429", "500", "503"]
    doc["paths"][f"{PREFIX}/chat/completions"] = {
        "post": {
            "tags": [TAG],
            "summary": "Create a chat completion (OpenAI-compatible).",
            "description": "OpenAI's Chat Completions: messages in, a chat.completion out, or "
            "chat.completion.chunk events with stream: true. Needs the chat scope; logged as a "
            "chat.completion interaction.",
            "operationId": _operation_id("/chat/completions", "POST"),
            "x-openai-isConsequential": False,
            "requestBody": {"required": True, "content": _json(_ref("ChatCompletionRequest"))},
            "responses": {
                "200": {
                    "description": "The completion.",
                    "headers": header_refs(),
                    "content": {**_json(_ref("ChatCompletion")), "text/event-stream": _STREAM},
                },
                **_errors(["400", "403", "404", "413", "415", *always, "502", "504"]),
            },
        }
    }
    doc["paths"][f"{PREFIX}/models"] = {
        "get": {
            "tags": [TAG],
            "summary": "List the models (OpenAI-compatible).",
            "description": "The configured backends, the default first.",
            "operationId": _operation_id("/models", "GET"),
            "responses": {
                "200": {
                    "description": "The models.",
                    "headers": header_refs(),
                    "content": _json(_ref("ModelList")),
                },
                **_errors(always),
            },
        }
    }
    doc["paths"][f"{PREFIX}/models/{{model}}"] = {
        "get": {
            "tags": [TAG],
            "summary": "Retrieve a model (OpenAI-compatible).",
            "description": "One configured backend, by its name or its model's name.",
            "operationId": _operation_id("/models/{model}", "GET"),
            "parameters": [
                {
                    "name": "model",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": [*models, "default"]},
                }
            ],
            "responses": {
                "200": {
                    "description": "The model.",
                    "headers": header_refs(),
                    "content": _json(_ref("Model")),
                },
                **_errors(["404", *always]),
            },
        }
    }
