"""The built-in actions, each a prompt for the model, a parameter schema and an output form."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from gptactions.llm.base import ChatMessage
from gptactions.services.actions.output import (
    ChoiceOutput,
    JsonOutput,
    OutputSpec,
    TextOutput,
    generate_output,
)
from gptactions.services.actions.registry import (
    NOT_BLANK,
    ActionContext,
    ActionDefinition,
    ActionOutcome,
    Handler,
)

TEXT_LIMIT = 20_000
"""Longest text, code or context a built-in action takes, in characters."""
SHORT_LIMIT = 100
"""Longest language, tone or label name, in characters."""
MAX_LABELS = 50
MAX_FIELDS = 20
SENTIMENTS = ("positive", "negative", "neutral")
FIELD_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "array": {"type": "array", "items": {"type": "string"}},
}
"""The types `extract` accepts for a field, and the JSON Schema each stands for."""


def _text(description: str, limit: int = TEXT_LIMIT) -> dict[str, Any]:
    # `\S`: a text of spaces alone gives the model nothing to work on (a 400, not a reply).
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": limit,
        "pattern": NOT_BLANK,
        "description": description,
    }


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    # No `additionalProperties: false`: the seed admits any parameter, and one the action does
    # not know is ignored, with a warning (`parameters.prepare_parameters`).
    return {"type": "object", "required": required, "properties": properties}


def _tokens_for(text: str, *, floor: int = 128, ceiling: int = 1024) -> int:
    """A reply budget proportional to a text: room for it to grow by half, in tokens."""
    return max(floor, min(ceiling, len(text) // 2 + 64))


async def _ask(
    ctx: ActionContext,
    system: str,
    prompt: str,
    output: OutputSpec | None = None,
    *,
    max_tokens: int = 256,
    public_system: bool = True,
) -> ActionOutcome:
    # The system message is the server's own text unless `public_system` says it holds the
    # caller's data (other cache scopes may reuse the model's memory of public messages).
    return await generate_output(
        ctx,
        (ChatMessage("system", system), ChatMessage("user", prompt)),
        output or TextOutput(),
        max_tokens=max_tokens,
        public_messages=1 if public_system else 0,
    )


# summarize


_LIST_MARKER = re.compile(r"[-*•+]|\d+[.)]")


def limit_words(text: str, limit: int) -> str:
    """The text cut after `limit` words, its line breaks kept; list markers are not words."""
    words = [w for w in re.finditer(r"\S+", text) if not _LIST_MARKER.fullmatch(w.group())]
    if len(words) <= limit:
        return text
    return text[: words[limit - 1].end()].rstrip(" ,;:") + "…"


def as_bullets(text: str) -> str:
    """The text as Markdown bullets: one per line, or one per sentence of a single paragraph."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1:
        lines = [s for s in re.split(r"(?<=[.!?])\s+", lines[0]) if s]
    items = [re.sub(rf"^(?:{_LIST_MARKER.pattern})\s+", "", line) for line in lines]
    return "\n".join(f"- {item}" for item in items if item)


async def summarize(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Summarize a text, as a paragraph or as bullets, optionally within a number of words."""
    limit: int | None = params.get("maxWords")
    bullets = params.get("format") == "bullets"
    within = f" in at most {limit} words" if limit else ""
    shape = " as a short list of bullet points, one per line" if bullets else " in one paragraph"

    def tidy(reply: str) -> str:
        return as_bullets(reply) if bullets else " ".join(reply.split())

    def shorten(reply: str) -> str:
        return limit_words(reply, limit) if limit else reply

    return await _ask(
        ctx,
        "You summarize texts accurately and briefly. Reply with the summary only.",
        f"Summarize the following text{shape}{within}.\n\nText:\n{params['text']}",
        TextOutput(tidy=tidy, shorten=shorten),
        max_tokens=min(1024, limit * 2 + 32) if limit else 256,
    )


# code

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def strip_fences(reply: str) -> str:
    """The code inside the first Markdown code fence, or the reply itself if it has none."""
    match = _FENCE.search(reply)
    return match.group(1).strip("\n") if match else reply.strip()


DEFAULT_LANGUAGE = "Python"
_LANGUAGES = (
    ("Python", r"(?i:python)"),
    ("JavaScript", r"(?i:javascript|node\.?js)"),
    ("TypeScript", r"(?i:typescript)"),
    ("Java", r"(?i:java)(?!\s*script)"),
    ("C#", r"(?i:c#|c-sharp|csharp)"),
    ("C++", r"(?i:c\+\+|cpp)"),
    ("C", r"C(?![#+\w])"),
    ("Go", r"Go(?!\w)|(?i:golang)"),
    ("Rust", r"(?i:rust)"),
    ("Ruby", r"(?i:ruby)"),
    ("PHP", r"(?i:php)"),
    ("Swift", r"Swift"),
    ("Kotlin", r"(?i:kotlin)"),
    ("Scala", r"(?i:scala)"),
    ("Bash", r"(?i:bash|shell)"),
    ("PowerShell", r"(?i:powershell)"),
    ("SQL", r"(?i:sql)"),
    ("R", r"R(?![\w'])"),
    ("Haskell", r"(?i:haskell)"),
    ("Lua", r"(?i:lua)"),
    ("Perl", r"(?i:perl)"),
    ("Dart", r"(?i:dart)"),
    ("Elixir", r"(?i:elixir)"),
    ("HTML", r"(?i:html)"),
    ("CSS", r"(?i:css)"),
)
# A hyphen on either side makes the name part of another word: `Rust-colored`, `non-Java`.
_LANGUAGE_NAMED = re.compile(
    "|".join(
        rf"(?<![\w#+.-])(?P<l{n}>{pattern})(?![\w#+-])" for n, (_, pattern) in enumerate(_LANGUAGES)
    )
)
_ASKED_BEFORE = re.compile(
    r"(?i:\b(?:in|using|use)\s+(?:(?:pure|plain|modern|idiomatic|vanilla|standard)\s+)?)$"
)
"""What before a language's name asks for it: `in Rust`, `using Go`, `written in pure C`."""
_ASKED_AFTER = re.compile(
    r"(?i:\s+(?:\d[\w.]*\s+)?(?:code|function|program|script|class|snippet|module|"
    r"one-?liner|method|implementation|solution|command|query|app|application|tool)s?\b)"
)
"""What after a language's name asks for it: `a Rust function`, `Python 3 code`."""
_NOT_ASKED = re.compile(r"(?i:\b(?:not|\w+n't|no|never|without|avoid\w*|except|instead|than)\b)")
"""Words that turn a request around when they come shortly before it: `do not use Java`."""
_COMPARED = re.compile(r"(?i:\b(?:as|like|unlike|than)\s*)$")
"""A word right before `in` that makes it a comparison, not a request: `as in C`."""
_CLAUSE_END = re.compile(r"[.,;:!?()\n]|\bbut\b")


def language_named(description: str) -> str | None:
    """The programming language a description asks for first, if any (`in Rust`, `a C
    function`, `a shell one-liner`); a name it mentions otherwise does not count (`do not use
    Java`, `Rust-colored`, `as in C`)."""
    for match in _LANGUAGE_NAMED.finditer(description):
        before = description[: match.start()]
        asked = _ASKED_BEFORE.search(before)
        if asked is not None:
            start = asked.start()
            if _COMPARED.search(before[:start]):
                continue
        elif _ASKED_AFTER.match(description, match.end()):
            start = match.start()
        else:
            continue
        clause = _CLAUSE_END.split(description[:start])[-1]
        if _NOT_ASKED.search(" ".join(clause.split()[-3:])):
            continue
        assert match.lastgroup is not None  # one of the named alternatives matched
        return _LANGUAGES[int(match.lastgroup[1:])][0]
    return None


async def generate_code(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Write code in a language from a description: the one given, else the one the description
    names, else Python (a warning says which it chose)."""
    language = params.get("language")
    warnings: tuple[str, ...] = ()
    if language is None:
        named = language_named(params["description"])
        language = named or DEFAULT_LANGUAGE
        why = "the language the description names" if named else "the default"
        warnings = (f"parameters/language was not given: the code is in {language}, {why}",)
    style = f" Follow this style: {params['style']}." if params.get("style") else ""
    outcome = await _ask(
        ctx,
        f"You are an expert {language} programmer. Reply with the code only, no explanations.",
        f"Write {language} code that does the following: {params['description']}.{style}",
        TextOutput(tidy=strip_fences),
        max_tokens=512,
        public_system=False,  # it names the language, the caller's (or taken from its text)
    )
    return replace(outcome, warnings=(*outcome.warnings, *warnings))


async def explain_code(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Explain what a piece of code does."""
    language = params.get("language")
    kind = f"{language} code" if language else "code"
    return await _ask(
        ctx,
        "You explain code clearly and briefly to programmers.",
        f"Explain briefly, in a few sentences, what the following {kind} does."
        f"\n\n```\n{params['code']}\n```",
        max_tokens=256,
    )


# language


async def translate(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Translate a text into another language."""
    source = f" from {params['sourceLanguage']}" if params.get("sourceLanguage") else ""
    return await _ask(
        ctx,
        "You are a professional translator. Reply with the translation only.",
        f"Translate the following text{source} into {params['targetLanguage']}.\n\n"
        f"Text:\n{params['text']}",
        max_tokens=_tokens_for(params["text"]),
    )


async def rewrite(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Rewrite a text in another tone, keeping its meaning."""
    return await _ask(
        ctx,
        "You rewrite texts. Keep the meaning and the length; change only the tone. "
        "Reply with the rewritten text only.",
        f"Rewrite the following text in a {params['tone']} tone.\n\nText:\n{params['text']}",
        max_tokens=_tokens_for(params["text"]),
    )


async def answer(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Answer a question, from a given context when there is one."""
    context = params.get("context")
    if context:
        system = (
            "You answer questions using only the given context. "
            "If the context does not hold the answer, say that you do not know."
        )
        prompt = f"Context:\n{context}\n\nQuestion: {params['question']}"
    else:
        system = "You answer questions accurately and concisely."
        prompt = params["question"]
    return await _ask(ctx, system, prompt, max_tokens=256)


# structured


def writable_label(label: str) -> bool:
    """Whether the model is asked to write the label itself: visible characters only (a control
    or format character may be beyond what a grammar or the vocabulary can hold, and reads as
    nothing in the prompt), and no quote or backslash (the embedded model's grammar of a JSON
    list of labels cannot hold them)."""
    return label.isprintable() and '"' not in label and "\\" not in label


async def classify(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Sort a text into one of the given labels, or several with `multiLabel`.

    The model writes the labels themselves when it can (`writable_label`, and no two the same
    but for case and surrounding spaces); otherwise it is shown them numbered and answers with
    numbers, which are mapped back, so that the result is always exactly one of the labels as
    given.
    """
    labels = tuple(params["labels"])
    multiple = bool(params.get("multiLabel"))
    # A reply is read trimmed and but for case (`match_choice`): labels the same that way
    # could not be told apart.
    by_text = all(writable_label(label) for label in labels) and len(
        {label.strip().casefold() for label in labels}
    ) == len(labels)
    if by_text:
        listed = "\n".join(f"- {label}" for label in labels)
        how = (
            "Reply with a JSON list of every label that applies."
            if multiple
            else "Reply with the one label that fits best, exactly as written."
        )
        output = ChoiceOutput(labels, multiple=multiple)
    else:
        listed = "\n".join(
            f"{n}. {json.dumps(label, ensure_ascii=False)}" for n, label in enumerate(labels, 1)
        )
        how = (
            "Reply with a JSON list of the numbers of every label that applies."
            if multiple
            else "Reply with the number of the one label that fits best."
        )
        output = ChoiceOutput(
            labels, multiple=multiple, aliases=tuple(str(n) for n in range(1, len(labels) + 1))
        )
    # In tokens: a byte-level vocabulary writes any text in at most one token per byte.
    longest = max(len(choice.encode("utf-8")) for choice in output.written)
    written = sum(len(choice.encode("utf-8")) + 4 for choice in output.written)
    return await _ask(
        ctx,
        "You classify texts. You only ever answer with labels from the given list.",
        f"Labels:\n{listed}\n\n{how}\n\nText:\n{params['text']}",
        output,
        max_tokens=(written + 8) if multiple else longest + 8,
    )


async def sentiment(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Whether a text is positive, negative or neutral."""
    return await _ask(
        ctx,
        "You judge the sentiment of texts. Answer with one word: positive, negative or neutral.",
        f"What is the sentiment of this text?\n\nText:\n{params['text']}",
        ChoiceOutput(SENTIMENTS),
        max_tokens=8,
    )


def extraction_schema(fields: dict[str, str]) -> dict[str, Any]:
    """The JSON Schema of an object with exactly the given fields, each of its type."""
    return {
        "type": "object",
        "properties": {name: FIELD_TYPES[kind] for name, kind in fields.items()},
        "required": list(fields),
        "additionalProperties": False,
    }


_KEYWORD_NAMES = frozenset({"const"})
"""Property names that grammar converters read as schema keywords (llama-cpp-python's takes any
`$ref` key for a reference, and its safety check any `const` for a constant)."""


def writable_field(name: str) -> bool:
    """Whether the model is asked to write a field's name itself (else an alias, `field3`):
    visible characters only, no quote or backslash (llama-cpp-python's converter writes a
    backslash unescaped, and either makes the embedded model decode plain JSON, where the field
    may be left out), and nothing a converter reads as a schema keyword."""
    return (
        bool(name)
        and name.isprintable()
        and '"' not in name
        and "\\" not in name
        and not name.startswith("$")
        and name not in _KEYWORD_NAMES
    )


def field_aliases(fields: dict[str, str]) -> dict[str, str]:
    """The name the model writes for each field (by the field's name): the name itself when it
    is `writable_field`, else `field<n>` (n its position), unlike any other name."""
    taken = {name for name in fields if writable_field(name)}
    written: dict[str, str] = {}
    for position, name in enumerate(fields, 1):
        if name in taken:
            written[name] = name
            continue
        alias, n = f"field{position}", position
        while alias in taken:
            n += len(fields)
            alias = f"field{n}"
        taken.add(alias)
        written[name] = alias
    return written


async def extract(ctx: ActionContext, params: dict[str, Any]) -> ActionOutcome:
    """Pull named, typed fields out of a text as a JSON object (the model writes a field whose
    name it cannot write under an alias, mapped back)."""
    fields: dict[str, str] = params["fields"]
    aliases = field_aliases(fields)
    wanted = "\n".join(
        f"- {aliases[name]} ({kind})"
        + ("" if aliases[name] == name else f": the field {json.dumps(name, ensure_ascii=False)}")
        for name, kind in fields.items()
    )
    written = {aliases[name]: kind for name, kind in fields.items()}
    return await _ask(
        ctx,
        "You extract information from texts and reply with a JSON object only.",
        f"Extract these fields from the text:\n{wanted}\n\nText:\n{params['text']}",
        JsonOutput(
            extraction_schema(written),
            keys=tuple((alias, name) for name, alias in aliases.items() if alias != name),
        ),
        max_tokens=min(1024, 48 + 64 * len(fields)),
    )


def _action(
    name: str, description: str, parameters: dict[str, Any], handler: Handler
) -> ActionDefinition:
    # The first required parameter is the main text, which a caller may send under another name.
    return ActionDefinition(
        name=name,
        description=description,
        parameters=parameters,
        handler=handler,
        primary=parameters["required"][0],
    )


_LANGUAGE = "A language name, e.g. French."

BUILTIN_ACTIONS: tuple[ActionDefinition, ...] = (
    _action(
        "summarize",
        "Summarize a text, as a paragraph or as bullet points, optionally within a word limit.",
        _object(
            ["text"],
            {
                "text": _text("The text to summarize."),
                "maxWords": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 500,
                    "description": "Longest summary wanted, in words; longer ones are cut.",
                },
                "format": {
                    "type": "string",
                    "enum": ["paragraph", "bullets"],
                    "default": "paragraph",
                    "description": "One paragraph, or Markdown bullet points.",
                },
            },
        ),
        summarize,
    ),
    _action(
        "generateCode",
        "Write code in a programming language from a description; the result is the code only.",
        _object(
            ["description"],
            {
                "description": _text("What the code should do."),
                "language": _text(
                    "The programming language, e.g. python. Without it: the language the "
                    "description names, else Python (a warning says which).",
                    SHORT_LIMIT,
                ),
                "style": _text("Style wishes, e.g. 'with type hints'.", 500),
            },
        ),
        generate_code,
    ),
    _action(
        "explainCode",
        "Explain what a piece of code does.",
        _object(
            ["code"],
            {
                "code": _text("The code to explain."),
                "language": _text("Its programming language, if known.", SHORT_LIMIT),
            },
        ),
        explain_code,
    ),
    _action(
        "translate",
        "Translate a text into another language.",
        _object(
            ["text", "targetLanguage"],
            {
                "text": _text("The text to translate."),
                "targetLanguage": _text(
                    "The language to translate into. " + _LANGUAGE, SHORT_LIMIT
                ),
                "sourceLanguage": _text("The text's language, if known. " + _LANGUAGE, SHORT_LIMIT),
            },
        ),
        translate,
    ),
    _action(
        "classify",
        "Sort a text into one of the given labels (or several, with multiLabel). The result is "
        "always taken from the labels; data holds the label, or the list of labels.",
        _object(
            ["text", "labels"],
            {
                "text": _text("The text to classify."),
                "labels": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_LABELS,
                    "uniqueItems": True,
                    "items": _text("A label.", SHORT_LIMIT),
                    "description": "The labels to choose from.",
                },
                "multiLabel": {
                    "type": "boolean",
                    "default": False,
                    "description": "Allow several labels; the result lists them, comma separated.",
                },
            },
        ),
        classify,
    ),
    _action(
        "extract",
        "Extract named fields from a text. The result is a JSON object with exactly those fields, "
        "each of its type; data holds the object.",
        _object(
            ["text", "fields"],
            {
                "text": _text("The text to extract from."),
                "fields": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": MAX_FIELDS,
                    "additionalProperties": {"type": "string", "enum": list(FIELD_TYPES)},
                    "description": "Field name to type: string, number, integer, boolean, or "
                    "array (a list of strings).",
                },
            },
        ),
        extract,
    ),
    _action(
        "sentiment",
        "Judge the sentiment of a text: positive, negative or neutral.",
        _object(["text"], {"text": _text("The text to judge.")}),
        sentiment,
    ),
    _action(
        "rewrite",
        "Rewrite a text in another tone, keeping its meaning.",
        _object(
            ["text", "tone"],
            {
                "text": _text("The text to rewrite."),
                "tone": _text("The tone wanted, e.g. formal, friendly, concise.", SHORT_LIMIT),
            },
        ),
        rewrite,
    ),
    _action(
        "answer",
        "Answer a question, using only the given context when there is one.",
        _object(
            ["question"],
            {
                "question": _text("The question.", 4000),
                "context": _text("Text that holds the answer, if any."),
            },
        ),
        answer,
    ),
)
