"""Every built-in action run with the real embedded model: the output is well-formed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gptactions.services.actions import ActionContext, ActionOutcome, ActionRegistry

from .conftest import run_handler

pytestmark = pytest.mark.model

PARK = (
    "The city council met on Tuesday to discuss the new park. Residents asked for more trees "
    "and a playground. The council agreed to fund both, and construction starts in May. "
    "The park will open next summer."
)


async def _run(
    registry: ActionRegistry, ctx: ActionContext, name: str, params: dict[str, object]
) -> ActionOutcome:
    outcome = await run_handler(registry, ctx, name, params)
    assert outcome.success, outcome.result
    assert isinstance(outcome.result, str) and outcome.result.strip()
    assert outcome.usage.completion_tokens > 0
    assert outcome.backend == "local"
    return outcome


async def test_summarize(registry: ActionRegistry, model_context: ActionContext) -> None:
    outcome = await _run(registry, model_context, "summarize", {"text": PARK, "maxWords": 25})
    assert len(outcome.result.split()) <= 25
    assert "\n" not in outcome.result
    assert outcome.data is None


async def test_summarize_as_bullets(registry: ActionRegistry, model_context: ActionContext) -> None:
    outcome = await _run(registry, model_context, "summarize", {"text": PARK, "format": "bullets"})
    lines = outcome.result.splitlines()
    assert lines and all(line.startswith("- ") and len(line) > 2 for line in lines)


async def test_generate_code(registry: ActionRegistry, model_context: ActionContext) -> None:
    outcome = await _run(
        registry,
        model_context,
        "generateCode",
        {
            "description": "a function that returns the sum of a list of numbers",
            "language": "python",
        },
    )
    assert "```" not in outcome.result
    assert "def " in outcome.result or "sum" in outcome.result


async def test_explain_code(registry: ActionRegistry, model_context: ActionContext) -> None:
    outcome = await _run(
        registry,
        model_context,
        "explainCode",
        {"code": "def add(a, b):\n    return a + b", "language": "python"},
    )
    assert len(outcome.result.split()) >= 5


async def test_translate(registry: ActionRegistry, model_context: ActionContext) -> None:
    outcome = await _run(
        registry,
        model_context,
        "translate",
        {
            "text": "Good morning, my friend.",
            "targetLanguage": "French",
            "sourceLanguage": "English",
        },
    )
    assert outcome.result != "Good morning, my friend."


async def test_classify_answers_one_of_the_labels(
    registry: ActionRegistry, model_context: ActionContext
) -> None:
    labels = ["sports", "politics", "technology"]
    for text in (
        "The team won the championship game last night.",
        "Parliament passed the new budget after a long debate.",
        "Quarterly weather outlook for farmers.",  # fits none: still one of the labels
    ):
        outcome = await _run(registry, model_context, "classify", {"text": text, "labels": labels})
        assert outcome.result in labels and outcome.data == outcome.result


async def test_classify_with_several_labels(
    registry: ActionRegistry, model_context: ActionContext
) -> None:
    labels = ["sports", "politics", "technology", "food"]
    outcome = await _run(
        registry,
        model_context,
        "classify",
        {
            "text": "The government plans a new tax on smartphones.",
            "labels": labels,
            "multiLabel": True,
        },
    )
    assert isinstance(outcome.data, list) and outcome.data
    assert set(outcome.data) <= set(labels) and len(set(outcome.data)) == len(outcome.data)
    assert outcome.result == ", ".join(outcome.data)


async def test_extract_returns_exactly_the_typed_fields(
    registry: ActionRegistry, model_context: ActionContext
) -> None:
    fields = {
        "name": "string",
        "age": "integer",
        "city": "string",
        "member": "boolean",
        "height": "number",
        "hobbies": "array",
    }
    outcome = await _run(
        registry,
        model_context,
        "extract",
        {
            "text": "Alice Smith is 34 years old, 1.68 m tall, and lives in Paris. "
            "She is a club member and enjoys chess and tennis.",
            "fields": fields,
        },
    )
    data = outcome.data
    assert isinstance(data, dict) and list(data) == list(fields)
    assert json.loads(outcome.result) == data
    assert isinstance(data["name"], str) and isinstance(data["city"], str)
    assert isinstance(data["age"], int) and not isinstance(data["age"], bool)
    assert isinstance(data["member"], bool)
    assert isinstance(data["height"], int | float) and not isinstance(data["height"], bool)
    assert isinstance(data["hobbies"], list) and all(isinstance(h, str) for h in data["hobbies"])


async def test_sentiment(registry: ActionRegistry, model_context: ActionContext) -> None:
    results = [
        (await _run(registry, model_context, "sentiment", {"text": text})).result
        for text in (
            "I love this product, it works wonderfully!",
            "This is the worst service I have ever had.",
            "The meeting is at 3 pm.",
        )
    ]
    assert all(r in ("positive", "negative", "neutral") for r in results)
    assert results[:2] == ["positive", "negative"]


async def test_max_tokens_of_one_still_gives_a_whole_label(
    registry: ActionRegistry, model_context: ActionContext
) -> None:
    capped = replace(model_context, max_tokens=1)  # the request's maxTokens: 1
    labels = {"text": "We won the cup!", "labels": ["sports", "politics"]}
    classified = await _run(registry, capped, "classify", labels)
    assert (classified.result, classified.cut()) == ("sports", False)
    judged = await _run(registry, capped, "sentiment", {"text": "I love this, it is wonderful!"})
    assert (judged.result, judged.finish_reason, judged.cut()) == ("positive", "stop", False)


async def test_rewrite(registry: ActionRegistry, model_context: ActionContext) -> None:
    outcome = await _run(
        registry,
        model_context,
        "rewrite",
        {"text": "hey, send me the report asap", "tone": "formal"},
    )
    assert outcome.result != "hey, send me the report asap"


async def test_answer(registry: ActionRegistry, model_context: ActionContext) -> None:
    outcome = await _run(
        registry,
        model_context,
        "answer",
        {"question": "When does construction start?", "context": PARK},
    )
    assert outcome.data is None
    plain = await _run(
        registry, model_context, "answer", {"question": "What is the capital of France?"}
    )
    assert "Paris" in plain.result


ODD_LABELS = [
    "\x00",
    "\x81",
    "a\x81b",
    "\u200b",
    "\u200d",
    "\u202e",
    "\ufeffx",
    "\ufffe",
    "\uffff",
    "\ue000",
    "\U000f0000",
    "\U0010ffff",
    "\U000bf602",
    "\U000e0001",
    "\u0378",
    "a\u2028b",
    "\x04 and \U000bf602",
    "\u3000x",
]
"""Valid labels the model cannot write as text: NUL alone was a 502 (no grammar token matches
it), and these 18 together a `success: false` (unwritable, so left out of the grammar)."""


async def test_classify_answers_exactly_one_of_any_valid_labels(
    registry: ActionRegistry, model_context: ActionContext
) -> None:
    for labels in (["\x00"], ["\x81"], ["a\x81b"], ODD_LABELS):
        outcome = await _run(registry, model_context, "classify", {"text": "hi", "labels": labels})
        assert outcome.result in labels and outcome.data == outcome.result, labels
    several = await _run(
        registry,
        model_context,
        "classify",
        {"text": "hi there", "labels": ODD_LABELS, "multiLabel": True},
    )
    assert several.data and set(several.data) <= set(ODD_LABELS)
    assert several.result == ", ".join(several.data)


async def test_extract_works_with_any_field_name(
    registry: ActionRegistry, model_context: ActionContext
) -> None:
    """A name with a backslash, a quote or a control character, or `$ref`, broke the grammar or
    its conversion (the answer never had the field); so did a raw newline in a value."""
    for fields in (
        {"a b": "string"},
        {"x\\y": "number"},
        {"$ref": "number"},
        {'"': "string"},
        {"\n": "integer"},
        {"full name": "string", "first name": "string", "age": "integer"},
    ):
        outcome = await _run(
            registry,
            model_context,
            "extract",
            {"text": "Ann Smith is 34 years old.", "fields": fields},
        )
        assert isinstance(outcome.data, dict) and list(outcome.data) == list(fields), fields
        assert json.loads(outcome.result) == outcome.data
