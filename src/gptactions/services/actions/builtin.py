"""The built-in actions, each a prompt for the model and a parameter schema."""

from __future__ import annotations

from typing import Any

from gptactions.llm.base import ChatMessage, GenerationRequest
from gptactions.services.actions.registry import (
    ActionContext,
    ActionDefinition,
    ActionOutcome,
)

TEXT_LIMIT = 20_000


async def _complete(
    ctx: ActionContext, system: str, prompt: str, *, max_tokens: int = 256
) -> ActionOutcome:
    generation = await ctx.router.generate(
        GenerationRequest(
            messages=(ChatMessage("system", system), ChatMessage("user", prompt)),
            max_tokens=max_tokens,
            temperature=0.0,
        ),
        ctx.model,
    )
    text = generation.text.strip()
    if not text:
        return ActionOutcome(False, "the model returned an empty answer", usage=generation.usage)
    return ActionOutcome(
        True, text, usage=generation.usage, backend=generation.backend, model=generation.model
    )


async def summarize(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Summarize a text, optionally within a number of words."""
    limit = params.get("maxWords")
    words = f" in at most {limit} words" if limit else ""
    return await _complete(
        ctx,
        "You summarize texts accurately. Reply with the summary only.",
        f"Summarize the following text{words}.\n\nText:\n{params['text']}",
        max_tokens=min(1024, int(limit) * 2 + 16) if limit else 256,
    )


async def generate_code(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Write code in a language from a description."""
    language = params["language"]
    return await _complete(
        ctx,
        f"You are an expert {language} programmer. Reply with code only.",
        f"Write {language} code that does the following: {params['description']}",
        max_tokens=512,
    )


BUILTIN_ACTIONS: tuple[ActionDefinition, ...] = (
    ActionDefinition(
        name="summarize",
        description="Summarize a text.",
        parameters={
            "type": "object",
            "required": ["text"],
            "additionalProperties": False,
            "properties": {
                "text": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": TEXT_LIMIT,
                    "description": "The text to summarize.",
                },
                "maxWords": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 500,
                    "description": "Longest summary wanted, in words.",
                },
            },
        },
        handler=summarize,
    ),
    ActionDefinition(
        name="generateCode",
        description="Write code in a programming language from a description.",
        parameters={
            "type": "object",
            "required": ["description", "language"],
            "additionalProperties": False,
            "properties": {
                "description": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": TEXT_LIMIT,
                    "description": "What the code should do.",
                },
                "language": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 40,
                    "description": "The programming language, e.g. python.",
                },
            },
        },
        handler=generate_code,
    ),
)
