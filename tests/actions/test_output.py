"""Output forms with the fake model: constrained requests, checks, a retry, then success: false."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from gptactions.llm.base import BackendUnavailable, ChatMessage, Generation, GenerationRequest
from gptactions.llm.fake import FakeBackend
from gptactions.llm.router import BackendRouter
from gptactions.services.actions import ActionContext, ActionRegistry
from gptactions.services.actions.builtin import (
    as_bullets,
    language_named,
    limit_words,
    strip_fences,
)
from gptactions.services.actions.output import ChoiceOutput, generate_output
from gptactions.services.errors import ServiceError

from .conftest import run_handler

FakeContext = Callable[..., tuple[ActionContext, FakeBackend]]
LABELS = ["sports", "politics", "technology"]


async def test_classify_constrains_decoding_to_the_labels(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, fake = fake_context("politics")
    outcome = await run_handler(registry, ctx, "classify", {"text": "t", "labels": LABELS})
    assert (outcome.success, outcome.result, outcome.data) == (True, "politics", "politics")
    assert fake.requests[0].choices == tuple(LABELS)


async def test_classify_retries_an_invented_label_once_and_then_succeeds(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, fake = fake_context("weather", "sports")
    outcome = await run_handler(registry, ctx, "classify", {"text": "t", "labels": LABELS})
    assert (outcome.success, outcome.result) == (True, "sports")
    assert len(fake.requests) == 2
    retry = fake.requests[1].messages
    assert retry[-2].role == "assistant" and retry[-2].content == "weather"
    assert "not one of" in retry[-1].content and "sports" in retry[-1].content
    assert outcome.usage.completion_tokens == 2


async def test_classify_fails_after_the_retry_without_inventing(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, fake = fake_context("weather", "cooking")
    outcome = await run_handler(registry, ctx, "classify", {"text": "t", "labels": LABELS})
    assert outcome.success is False
    assert "'cooking' is not one of" in outcome.result
    assert outcome.data is None
    assert len(fake.requests) == 2


async def test_a_reply_that_names_one_label_is_that_label_from_any_backend(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    # The rule an upstream's answer is read by, the same for every backend.
    ctx, fake = fake_context("I think politics.")
    outcome = await run_handler(registry, ctx, "classify", {"text": "t", "labels": LABELS})
    assert (outcome.success, outcome.result, len(fake.requests)) == (True, "politics", 1)


async def test_classify_accepts_a_label_but_for_case_and_punctuation(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, _ = fake_context(' "Technology." ')
    outcome = await run_handler(registry, ctx, "classify", {"text": "t", "labels": LABELS})
    assert (outcome.result, outcome.data) == ("technology", "technology")


async def test_multilabel_asks_for_a_json_list_and_removes_repeats(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, fake = fake_context('["politics", "sports", "politics"]')
    outcome = await run_handler(
        registry, ctx, "classify", {"text": "t", "labels": LABELS, "multiLabel": True}
    )
    assert (outcome.result, outcome.data) == ("politics, sports", ["politics", "sports"])
    schema = fake.requests[0].json_schema
    assert schema is not None and schema["items"]["enum"] == LABELS


@pytest.mark.parametrize("reply", ["[]", '["weather"]', "politics", '{"a": 1}'])
async def test_multilabel_refuses_what_is_not_a_list_of_labels(
    registry: ActionRegistry, fake_context: FakeContext, reply: str
) -> None:
    ctx, _ = fake_context(reply, reply)
    outcome = await run_handler(
        registry, ctx, "classify", {"text": "t", "labels": LABELS, "multiLabel": True}
    )
    assert outcome.success is False


async def test_sentiment_is_one_of_three(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, fake = fake_context("happy", "Negative")
    outcome = await run_handler(registry, ctx, "sentiment", {"text": "awful"})
    assert (outcome.success, outcome.result, outcome.data) == (True, "negative", "negative")
    assert fake.requests[0].choices == ("positive", "negative", "neutral")


FIELDS = {"name": "string", "age": "integer", "member": "boolean", "tags": "array"}


async def test_extract_asks_for_exactly_the_fields(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    reply = '{"name": "Ann", "age": 34, "member": true, "tags": ["a"]}'
    ctx, fake = fake_context(reply)
    outcome = await run_handler(registry, ctx, "extract", {"text": "t", "fields": FIELDS})
    assert outcome.success
    assert outcome.data == {"name": "Ann", "age": 34, "member": True, "tags": ["a"]}
    assert json.loads(outcome.result) == outcome.data
    schema = fake.requests[0].json_schema
    assert schema is not None
    assert schema["required"] == list(FIELDS) and schema["additionalProperties"] is False
    assert schema["properties"]["age"] == {"type": "integer"}


@pytest.mark.parametrize(
    "reply",
    [
        '{"name": "Ann", "age": "34", "member": true, "tags": []}',  # wrong type
        '{"name": "Ann", "member": true, "tags": []}',  # missing field
        '{"name": "Ann", "age": 3, "member": true, "tags": [], "x": 1}',  # extra field
        '{"name": "Ann", "age": 3,',  # cut short
    ],
)
async def test_extract_refuses_objects_that_break_the_fields(
    registry: ActionRegistry, fake_context: FakeContext, reply: str
) -> None:
    ctx, fake = fake_context(reply, reply)
    outcome = await run_handler(registry, ctx, "extract", {"text": "t", "fields": FIELDS})
    assert outcome.success is False
    assert outcome.result.startswith("the model's output could not be brought into")
    assert "JSON" in fake.requests[1].messages[-1].content


async def test_extract_recovers_on_the_retry(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, _ = fake_context("not json", '```json\n{"city": "Paris"}\n```')
    outcome = await run_handler(
        registry, ctx, "extract", {"text": "t", "fields": {"city": "string"}}
    )
    assert (outcome.success, outcome.data) == (True, {"city": "Paris"})


async def test_an_empty_text_answer_is_retried_then_fails(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, _ = fake_context("  ", "\n")
    outcome = await run_handler(registry, ctx, "answer", {"question": "why?"})
    assert (outcome.success, outcome.result) == (
        False,
        "the model's output could not be brought into the required form: "
        "the model returned an empty answer",
    )


async def test_backend_errors_are_not_turned_into_outcomes(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, _ = fake_context(BackendUnavailable("down"))
    with pytest.raises(BackendUnavailable):
        await run_handler(registry, ctx, "answer", {"question": "why?"})


async def test_a_prompt_that_leaves_no_room_for_the_answer_is_too_long(
    registry: ActionRegistry,
) -> None:
    ctx = ActionContext(BackendRouter([FakeBackend(context_window=64)]))
    with pytest.raises(ServiceError) as raised:
        await run_handler(registry, ctx, "summarize", {"text": "word " * 200})
    # The same code as a conversation's message that does not fit, naming what to shorten.
    assert (raised.value.status, raised.value.code) == (400, "prompt_too_long")
    assert [p.pointer for p in raised.value.details] == ["/parameters"]


async def test_the_reply_budget_shrinks_to_fit_the_context_window(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, fake = fake_context("short")
    fake.context_window = 200
    await run_handler(registry, ctx, "summarize", {"text": "word " * 100})
    assert fake.requests[0].max_tokens < 256


async def test_summarize_cuts_to_max_words_and_makes_bullets(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, _ = fake_context("One two three. Four five six. Seven eight.")
    outcome = await run_handler(
        registry, ctx, "summarize", {"text": "t", "maxWords": 5, "format": "bullets"}
    )
    assert outcome.result == "- One two three.\n- Four five…"


async def test_generate_code_returns_the_code_without_fences(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, fake = fake_context("Here you are:\n```python\nprint('hi')\n```\nEnjoy!")
    outcome = await run_handler(
        registry,
        ctx,
        "generateCode",
        {"description": "greet", "language": "python", "style": "terse"},
    )
    assert outcome.result == "print('hi')"
    assert "terse" in fake.requests[0].messages[-1].content


async def test_optional_parameters_reach_the_prompt(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, fake = fake_context("Bonjour", "ok", "fine")
    await run_handler(
        registry,
        ctx,
        "translate",
        {"text": "Hello", "targetLanguage": "French", "sourceLanguage": "English"},
    )
    await run_handler(registry, ctx, "answer", {"question": "Who?", "context": "Ann did it."})
    await run_handler(registry, ctx, "rewrite", {"text": "hey", "tone": "formal"})
    prompts = [r.messages[-1].content for r in fake.requests]
    assert "from English into French" in prompts[0]
    assert (
        "Ann did it." in prompts[1]
        and "only the given context" in fake.requests[1].messages[0].content
    )
    assert "formal tone" in prompts[2]


def test_text_helpers() -> None:
    assert limit_words("a b\nc d", 3) == "a b\nc…"
    assert limit_words("- a b\n- c d", 3) == "- a b\n- c…"
    assert limit_words("a b", 3) == "a b"
    assert as_bullets("* one\n2. two\n\n- three") == "- one\n- two\n- three"
    assert as_bullets("3.5 percent rose. Then fell.") == "- 3.5 percent rose.\n- Then fell."
    assert strip_fences("no fences") == "no fences"
    assert strip_fences("```\nx = 1\n") == "x = 1"


async def test_the_server_limit_caps_every_generation(registry: ActionRegistry) -> None:
    fake = FakeBackend(["def f(): pass"])
    ctx = ActionContext(BackendRouter([fake]), max_tokens=8)
    await run_handler(registry, ctx, "generateCode", {"description": "f", "language": "python"})
    assert fake.requests[0].max_tokens == 8


async def test_failure_reasons_stay_short_with_many_labels(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    labels = [f"label{i} " + "x" * 90 for i in range(50)]
    ctx, _ = fake_context("nope", "nope")
    outcome = await run_handler(registry, ctx, "classify", {"text": "t", "labels": labels})
    assert outcome.success is False
    assert "(and 40 more)" in outcome.result and len(outcome.result) < 1500


async def test_labels_with_surrounding_spaces_still_match(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, _ = fake_context("Urgent")
    outcome = await run_handler(
        registry, ctx, "classify", {"text": "t", "labels": [" urgent ", "later"]}
    )
    assert outcome.data == " urgent "


ODD_LABELS = ["\x00", "a\x81b", 'say "hi"', "back\\slash", "tab\tx", "\u200bzero", "\U000bf602"]
"""Labels the model cannot be asked to write as text: chosen by number instead."""


async def test_labels_the_model_cannot_write_are_chosen_by_number(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, fake = fake_context("2")
    outcome = await run_handler(registry, ctx, "classify", {"text": "t", "labels": ODD_LABELS})
    assert (outcome.success, outcome.result, outcome.data) == (True, "a\x81b", "a\x81b")
    assert fake.requests[0].choices == tuple(str(n) for n in range(1, len(ODD_LABELS) + 1))
    prompt = fake.requests[0].messages[-1].content
    assert '2. "a\x81b"' in prompt and '1. "\\u0000"' in prompt
    # A list of numbers, as JSON numbers or strings, is the list of those labels.
    ctx, fake = fake_context('[7, "1", 7]')
    several = await run_handler(
        registry, ctx, "classify", {"text": "t", "labels": ODD_LABELS, "multiLabel": True}
    )
    assert several.success and several.data == ["\U000bf602", "\x00"]
    assert fake.requests[0].json_schema is not None
    assert fake.requests[0].json_schema["items"]["enum"] == [str(n) for n in range(1, 8)]


async def test_plain_labels_are_still_written_as_text(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    """Visible text is asked for as it is (a small model picks a word better than a number);
    labels the same but for case or spaces would not be told apart, so they are numbered."""
    for labels, choices in [
        (["économie", "政治", "a b"], ("économie", "政治", "a b")),
        (["Urgent", "urgent "], ("1", "2")),
    ]:
        ctx, fake = fake_context(choices[1])
        outcome = await run_handler(registry, ctx, "classify", {"text": "t", "labels": labels})
        assert outcome.result == labels[1]
        assert fake.requests[0].choices == choices


async def test_fields_the_model_cannot_name_are_written_under_aliases(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    fields = {"full name": "string", "x\\y": "number", "$ref": "integer", '"': "boolean"}
    ctx, fake = fake_context('{"full name": "Ann", "field2": 1.5, "field3": 3, "field4": true}')
    outcome = await run_handler(registry, ctx, "extract", {"text": "t", "fields": fields})
    assert outcome.success, outcome.result
    assert outcome.data == {"full name": "Ann", "x\\y": 1.5, "$ref": 3, '"': True}
    assert json.loads(outcome.result) == outcome.data
    schema = fake.requests[0].json_schema
    assert schema is not None and list(schema["properties"]) == [
        "full name",
        "field2",
        "field3",
        "field4",
    ]
    prompt = fake.requests[0].messages[-1].content
    assert '- field2 (number): the field "x\\\\y"' in prompt
    # An alias never takes a name the caller used.
    ctx, fake = fake_context('{"field2": "a", "field4": "b"}')
    taken = await run_handler(
        registry, ctx, "extract", {"text": "t", "fields": {"field2": "string", "a\nb": "string"}}
    )
    assert taken.data == {"field2": "a", "a\nb": "b"}


async def test_a_control_character_written_raw_in_a_string_is_that_character(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    """llama.cpp's JSON grammar lets a raw newline into a string: it was 'not valid JSON'."""
    ctx, _ = fake_context('{"a b": "Ann\nSmith"}')
    outcome = await run_handler(
        registry, ctx, "extract", {"text": "t", "fields": {"a b": "string"}}
    )
    assert outcome.success, outcome.result
    assert outcome.data == {"a b": "Ann\nSmith"}
    assert outcome.result == '{"a b": "Ann\\nSmith"}'


async def test_generate_code_without_a_language_says_which_it_chose(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    for description, language, why in [
        ("hello world in rust", "Rust", "the language the description names"),
        ("a C function that adds two ints", "C", "the language the description names"),
        ("reverse a string", "Python", "the default"),
        ("check a palindrome; do not use Java", "Python", "the default"),
    ]:
        ctx, fake = fake_context("code")
        outcome = await run_handler(registry, ctx, "generateCode", {"description": description})
        assert outcome.warnings == (
            f"parameters/language was not given: the code is in {language}, {why}",
        )
        assert f"Write {language} code" in fake.requests[0].messages[-1].content
    ctx, _ = fake_context("code")
    given = {"description": "hello world in rust", "language": "go"}
    assert (await run_handler(registry, ctx, "generateCode", given)).warnings == ()


@pytest.mark.parametrize(
    ("description", "language"),
    [
        # Asked for: the language counts.
        ("hello world in rust", "Rust"),
        ("Write a function that reverses a list in C", "C"),
        ("an HTTP server in Go", "Go"),
        ("using Go, fetch a URL", "Go"),
        ("a Rust function that adds two numbers", "Rust"),
        ("a Rust program, script, class or module", "Rust"),
        ("a C function that adds two ints", "C"),
        ("a small Kotlin snippet that sorts", "Kotlin"),
        ("Python code that parses JSON", "Python"),
        ("a Python 3 script that renames files", "Python"),
        ("a TypeScript class for a stack", "TypeScript"),
        ("a bash script that backs up a folder", "Bash"),
        ("a shell one-liner that counts the lines of a file", "Bash"),
        ("a shell script that prints the date", "Bash"),
        ("write it in Rust, not in Java", "Rust"),
        ("do not use Java; write it in Kotlin", "Kotlin"),
        ("a queue in C++", "C++"),
        ("a SQL query for the ten newest orders", "SQL"),
        # Mentioned only: the default, Python.
        ("check whether a word is a palindrome; do not use Java", None),
        ("reverse a list, not in Java", None),
        ("sort numbers without Java", None),
        ("sort numbers without using Java", None),
        ("do not write a Java program for this", None),
        ("a function that converts Rust-colored RGB values to hex", None),
        ("count words, as in C or other languages", None),
        ("explain why Java is verbose", None),
        ("reverse a string", None),
    ],
)
def test_only_a_language_the_description_asks_for_counts(
    description: str, language: str | None
) -> None:
    assert language_named(description) == language


class _CutBackend(FakeBackend):
    """The fake model, whose every generation ends at its token limit."""

    async def generate(self, request: GenerationRequest) -> Generation:
        generation = await super().generate(request)
        return Generation(generation.text, generation.usage, "length", self.name, self.model)


async def test_the_requests_max_tokens_never_cuts_a_label(registry: ActionRegistry) -> None:
    fake = FakeBackend(["politics", "positive", '{"a": "x"}', "bugs", "sports"])
    # maxTokens 1 (with no server limit): the choice outputs keep their own budget.
    ctx = ActionContext(BackendRouter([fake]), max_tokens=1)
    labels = {"text": "t", "labels": LABELS}
    assert (await run_handler(registry, ctx, "classify", labels)).data == "politics"
    assert (await run_handler(registry, ctx, "sentiment", {"text": "t"})).data == "positive"
    fields = {"text": "t", "fields": {"a": "string"}}
    await run_handler(registry, ctx, "extract", fields)
    prompt = (ChatMessage("user", "which?"),)
    await generate_output(ctx, prompt, ChoiceOutput(("billing", "bugs")), max_tokens=8)
    # The server's own limit still caps a label's generation.
    limited = ActionContext(BackendRouter([fake]), max_tokens=1, server_max_tokens=5)
    await run_handler(registry, limited, "classify", labels)
    budgets = [r.max_tokens for r in fake.requests]
    assert budgets == [len("technology") + 8, 8, 1, 8, 5]


async def test_truncated_says_whether_the_result_is_cut(registry: ActionRegistry) -> None:
    fake = _CutBackend(["positive", "The park opens", "The fox is happy and it runs far away."])
    ctx = ActionContext(BackendRouter([fake]))
    label = await run_handler(registry, ctx, "sentiment", {"text": "t"})
    assert (label.result, label.finish_reason, label.cut()) == ("positive", "length", False)
    text = await run_handler(registry, ctx, "summarize", {"text": "t"})
    assert (text.finish_reason, text.cut()) == ("length", True)
    cut = await run_handler(registry, ctx, "summarize", {"text": "t", "maxWords": 5})
    assert (cut.result, cut.cut()) == ("The fox is happy and…", True)


async def test_a_summary_the_server_cuts_to_max_words_is_truncated(
    registry: ActionRegistry, fake_context: FakeContext
) -> None:
    ctx, _ = fake_context("The fox is happy and it runs far away.", "The fox is happy.")
    cut = await run_handler(registry, ctx, "summarize", {"text": "t", "maxWords": 5})
    assert (cut.result, cut.finish_reason, cut.cut()) == ("The fox is happy and…", "stop", True)
    whole = await run_handler(registry, ctx, "summarize", {"text": "t", "maxWords": 5})
    assert (whole.result, whole.cut()) == ("The fox is happy.", False)
