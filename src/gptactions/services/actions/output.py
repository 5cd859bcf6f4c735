"""Bringing the model's output into the form an action promises: text, one of some choices, or JSON.

Each kind asks the backend for constrained decoding (`GenerationRequest.choices` or `json_schema`,
which the embedded model turns into a llama.cpp grammar), then checks the reply itself, because not
every backend constrains and a reply cut short by `max_tokens` breaks any grammar. A reply that
fails the check is asked for once more, with the problem named; a second failure is an
`ActionOutcome(success=False)` whose `result` gives the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from gptactions.llm.base import (
    ChatMessage,
    Generation,
    GenerationRequest,
    Usage,
    match_choice,
)
from gptactions.services.actions.registry import ActionContext, ActionOutcome
from gptactions.services.errors import Problem, ServiceError


@dataclass(frozen=True)
class TextOutput:
    """Free text, passed through `tidy`; only an empty reply is refused.

    `shorten` is the server's own cut of the tidied reply (`summarize`'s `maxWords`): a reply
    it shortens is a result that is `truncated`.
    """

    tidy: Callable[[str], str] | None = None
    shorten: Callable[[str], str] | None = None


@dataclass(frozen=True)
class ChoiceOutput:
    """Exactly one of `choices`, or with `multiple` a non-empty list of distinct ones.

    With `aliases` (one per choice, in order) the model writes an alias instead of its choice,
    which is mapped back: for choices it cannot write (`builtin.classify` numbers them).
    """

    choices: tuple[str, ...]
    multiple: bool = False
    aliases: tuple[str, ...] | None = None

    @property
    def written(self) -> tuple[str, ...]:
        """What the model writes for the choices."""
        return self.aliases or self.choices


@dataclass(frozen=True)
class JsonOutput:
    """A JSON value valid against `schema`.

    `keys` pairs a top-level property the model writes with the name it stands for in the
    result (`builtin.extract` has fields it cannot name written under aliases).
    """

    schema: dict[str, Any]
    keys: tuple[tuple[str, str], ...] = ()


MIN_REPLY_TOKENS = 16
"""The fewest tokens left for the answer before a prompt counts as too long."""

OutputSpec = TextOutput | ChoiceOutput | JsonOutput


class OutputProblem(ValueError):
    """The reply does not have the promised form; the message says how."""


@dataclass(frozen=True)
class Checked:
    """A reply in form: the string for `result`, the parsed value for `data`, and whether the
    server shortened it (`cut`)."""

    result: str
    data: Any = None
    cut: bool = False


def output_request_fields(output: OutputSpec) -> dict[str, Any]:
    """The `GenerationRequest` fields that constrain decoding to the output's form."""
    if isinstance(output, ChoiceOutput):
        if output.multiple:
            return {"json_schema": choice_list_schema(output.written)}
        return {"choices": output.written}
    if isinstance(output, JsonOutput):
        return {"json_schema": output.schema}
    return {}


def choice_list_schema(choices: Sequence[str]) -> dict[str, Any]:
    """The JSON Schema of a non-empty list of distinct choices."""
    return {
        "type": "array",
        "items": {"type": "string", "enum": list(choices)},
        "minItems": 1,
        "maxItems": len(choices),
        "uniqueItems": True,
    }


def check_output(output: OutputSpec, text: str) -> Checked:
    """The reply brought into form, or OutputProblem saying why it cannot be."""
    reply = text.strip()
    if isinstance(output, TextOutput):
        if output.tidy is not None:
            reply = output.tidy(reply).strip()
        if not reply:
            raise OutputProblem("the model returned an empty answer")
        short = output.shorten(reply) if output.shorten is not None else reply
        return Checked(short, cut=short != reply)
    if isinstance(output, ChoiceOutput):
        return _check_choices(output, reply)
    value = _parse_json(reply)
    _check_schema(value, output.schema)
    if output.keys and isinstance(value, dict):
        names = dict(output.keys)
        value = {names.get(key, key): item for key, item in value.items()}
    return Checked(json.dumps(value, ensure_ascii=False), value)


def _check_choices(output: ChoiceOutput, reply: str) -> Checked:
    written = output.written
    if not output.multiple:
        said = match_choice(reply, written)
        if said is None:
            raise OutputProblem(f"{_clip(reply)!r} is not one of {_listed(written)}")
        label = output.choices[written.index(said)]
        return Checked(label, label)
    value = _parse_json(reply)
    if not isinstance(value, list) or not value:
        raise OutputProblem("the answer is not a non-empty JSON list of labels")
    labels: list[str] = []
    for item in value:
        if output.aliases and isinstance(item, int) and not isinstance(item, bool):
            item = str(item)  # numbered labels: 2 for "2"
        said = match_choice(item, written) if isinstance(item, str) else None
        if said is None:
            raise OutputProblem(f"{_clip(str(item))!r} is not one of {_listed(written)}")
        label = output.choices[written.index(said)]
        if label not in labels:
            labels.append(label)
    return Checked(", ".join(labels), labels)


def _parse_json(reply: str) -> Any:
    body = reply
    if body.startswith("```"):
        # Unconstrained backends like to fence JSON in Markdown.
        body = body.strip("`").removeprefix("json").strip()
    try:
        # Not strict: a control character written raw inside a string (llama.cpp's JSON
        # grammar lets one through) stands for itself, as the escape would.
        return json.loads(body, strict=False)
    except json.JSONDecodeError as exc:
        raise OutputProblem(f"the answer is not valid JSON ({exc.msg} at {exc.pos})") from None


def _check_schema(value: Any, schema: dict[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value)
    )
    if error is not None:
        where = "".join(f"/{part}" for part in error.absolute_path) or "/"
        raise OutputProblem(
            f"the answer does not fit the schema at {where}: {_clip(error.message, 300)}"
        )


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listed(choices: Sequence[str], shown: int = 10) -> str:
    """The choices for a message: all of a few, else the first ones and how many more."""
    if len(choices) <= shown:
        return repr(list(choices))
    return f"{list(choices[:shown])!r} (and {len(choices) - shown} more)"


def _add(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
        a.cached_tokens + b.cached_tokens,
    )


async def generate_output(
    ctx: ActionContext,
    messages: Sequence[ChatMessage],
    output: OutputSpec,
    *,
    max_tokens: int,
    temperature: float = 0.0,
    public_messages: int = 0,
) -> ActionOutcome:
    """Ask the model, check the reply's form, ask once more if it is wrong; never raise for form.

    `public_messages`: how many leading messages are the server's own text, with no caller data
    in them (`GenerationRequest.public_messages`).
    """
    conversation = tuple(messages)
    usage = Usage()
    generation: Generation | None = None
    problem = ""
    for _attempt in range(2):
        generation = await ctx.router.generate(
            GenerationRequest(
                messages=conversation,
                max_tokens=await _fit(ctx, conversation, max_tokens, _cap(ctx, output)),
                temperature=temperature,
                deadline=ctx.deadline,
                cache_scope=ctx.cache_scope,
                public_messages=public_messages,
                **output_request_fields(output),
            ),
            ctx.model,
        )
        usage = _add(usage, generation.usage)
        try:
            checked = check_output(output, generation.text)
        except OutputProblem as exc:
            problem = str(exc)
            if generation.finish_reason == "deadline":
                break  # no time is left for another attempt
            # The retry shows the model its reply and what is wrong with it, so that a
            # deterministic model does not simply say the same thing again.
            conversation = (
                *tuple(messages),
                ChatMessage("assistant", generation.text),
                ChatMessage("user", f"That answer is not usable: {problem}. {_retry_hint(output)}"),
            )
            continue
        # A label is whole once it is read, however its generation ended.
        stopped = generation.finish_reason in ("length", "deadline")
        return ActionOutcome(
            True,
            checked.result,
            checked.data,
            usage=usage,
            backend=generation.backend,
            model=generation.model,
            finish_reason=generation.finish_reason,
            truncated=checked.cut or (stopped and not isinstance(output, ChoiceOutput)),
        )
    assert generation is not None  # the loop ran at least once
    return ActionOutcome(
        False,
        f"the model's output could not be brought into the required form: {problem}",
        usage=usage,
        backend=generation.backend,
        model=generation.model,
        finish_reason=generation.finish_reason,
    )


def _cap(ctx: ActionContext, output: OutputSpec) -> int | None:
    """The most tokens a generation may take: the request's `maxTokens` caps free text and JSON,
    but not a choice, which it could only cut into something that is none of the choices."""
    return ctx.server_max_tokens if isinstance(output, ChoiceOutput) else ctx.max_tokens


async def _fit(
    ctx: ActionContext, conversation: tuple[ChatMessage, ...], max_tokens: int, cap: int | None
) -> int:
    """The reply budget, within `cap` and the room the prompt leaves in the model's context
    window; PromptTooLong if not even a short reply fits."""
    if cap is not None:
        max_tokens = min(max_tokens, cap)
    window = ctx.router.context_window(ctx.model)
    prompt = await ctx.router.count_tokens(conversation, ctx.model)
    room = window - prompt
    if room < min(max_tokens, MIN_REPLY_TOKENS):
        raise ServiceError(
            f"the action's prompt takes {prompt} tokens of the model's {window}-token context "
            "window, leaving no room for the answer: shorten the parameters",
            400,
            "prompt_too_long",  # as a conversation's message that does not fit
            [Problem("/parameters", f"must fit in the model's {window}-token context window")],
        )
    return min(max_tokens, room)


def _retry_hint(output: OutputSpec) -> str:
    if isinstance(output, ChoiceOutput):
        if output.multiple:
            return f"Reply with a JSON list of labels taken from: {json.dumps(output.written)}."
        return "Reply with exactly one of: " + ", ".join(output.written) + "."
    if isinstance(output, JsonOutput):
        return "Reply with only a JSON value valid against this schema: " + json.dumps(
            output.schema
        )
    return "Please answer."
