"""Reading an OpenAI-compatible upstream's answers: a whole `chat.completion`, or the
`chat.completion.chunk` events of a streamed one, into the backend interface's shapes."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from gptactions.llm.base import (
    BackendError,
    Chunk,
    Generation,
    GenerationRequest,
    Usage,
    match_choice,
)
from gptactions.llm.openai_wire import (
    error_message,
    estimated_prompt_tokens,
    estimated_tokens,
    tool_calls_of,
    usage_of,
    well_formed,
)


@dataclass
class Tally:
    """What an answer has delivered so far: its pieces of text (about a token each), and its
    usage once the upstream has sent it."""

    pieces: int = 0
    usage: Usage | None = None


def read_generation(
    data: Any,
    request: GenerationRequest,
    *,
    name: str,
    model: str,
    excerpt: Callable[[str], str],
) -> Generation:
    """The generation a whole answer holds; `excerpt` quotes the upstream in error messages."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise BackendError(
            f"upstream {name!r} answered without a choice: {excerpt(str(data))}"
        ) from None
    text = message.get("content") if isinstance(message, dict) else None
    calls = tool_calls_of(message.get("tool_calls")) if isinstance(message, dict) else ()
    if calls and text is None:
        text = ""
    if not isinstance(text, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        reason = f"refused: {excerpt(str(refusal))}" if refusal else "answered no text"
        raise BackendError(f"upstream {name!r} {reason}")
    text = well_formed(text)
    if request.choices:
        # Unwrap the `{"choice": ...}` the schema asked for; an answer that names none of
        # the choices is left as it is, for the caller's validation to judge.
        text = match_choice(text, request.choices) or text
    usage = usage_of(data.get("usage")) or Usage(
        estimated_prompt_tokens(request.messages), estimated_tokens(text)
    )
    return Generation(
        text=text,
        usage=usage,
        finish_reason=str(choice.get("finish_reason") or "stop"),
        backend=name,
        model=model or str(data.get("model") or ""),
        tool_calls=calls,
    )


async def read_stream(
    events: AsyncGenerator[str, None],
    request: GenerationRequest,
    *,
    name: str,
    excerpt: Callable[[str], str],
    tally: Tally | None = None,
) -> AsyncGenerator[Chunk, None]:
    """The chunks of a streamed answer, from the `data` of its Server-Sent Events.

    The last chunk carries the upstream's usage, or an estimate when it sent none; `tally`
    follows the answer as it comes.
    """
    tally = Tally() if tally is None else tally
    finish: str | None = None
    done = False
    started_calls: set[int] = set()
    try:
        async for data in events:
            if data.strip() == "[DONE]":
                done = True
                break
            try:
                event = json.loads(data)
            except ValueError:
                raise BackendError(
                    f"upstream {name!r} sent a malformed event: {excerpt(data)}"
                ) from None
            if not isinstance(event, dict):
                raise BackendError(f"upstream {name!r} sent an event that is no object")
            if "error" in event:
                raise BackendError(
                    f"upstream {name!r} failed midway: " + excerpt(error_message(json.dumps(event)))
                )
            if isinstance(event.get("usage"), dict):
                tally.usage = usage_of(event["usage"]) or tally.usage
            for choice in event.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta") or {}
                text = delta.get("content") or ""
                calls = tuple(
                    # Some servers (llama-cpp-python's) repeat the id and name in every
                    # piece; OpenAI sends them with the first only, and clients join pieces.
                    replace(call, id="", name="") if call.index in started_calls else call
                    for call in tool_calls_of(delta.get("tool_calls"), piece=True)
                )
                started_calls.update(call.index for call in calls)
                if text or calls:
                    tally.pieces += 1
                    yield Chunk(text=well_formed(str(text)), tool_calls=calls)
                finish = choice.get("finish_reason") or finish
    finally:
        await events.aclose()
    if not done and finish is None:
        raise BackendError(f"upstream {name!r} stopped midway, before the reply ended")
    usage = tally.usage or Usage(estimated_prompt_tokens(request.messages), tally.pieces)
    yield Chunk(text="", done=True, usage=usage, finish_reason=finish or "stop")
