"""JSON Schemas as llama.cpp grammars, through llama-cpp-python's converter, its failures named.

The converter (`llama_cpp.llama_grammar`) follows a subset of JSON Schema and fails on the rest
with assertions and stray exceptions: a `$ref` to nothing or to another document, a pattern not
anchored with ^ and $, a subschema with no type it knows, a boolean subschema. `schema_grammar`
turns each into `UnsupportedSchema`, which says what the grammar cannot follow and where, so that
a request can be refused before anything is generated instead of being decoded as any JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
from llama_cpp.llama_grammar import SchemaConverter

from gptactions.llm.base import UnsupportedSchema

_BASE = "stdin"
"""What the converter prefixes each `$ref` with (as llama-cpp-python's own entry point does)."""


def schema_grammar(schema: dict[str, Any]) -> str:
    """The GBNF grammar of a JSON Schema; raises `UnsupportedSchema` naming what it cannot follow.

    The caller bounds the schema's repetitions first (`local.MAX_REPETITION`): the converter
    writes each repetition out, and a huge count takes minutes and gigabytes.
    """
    copy = json.loads(json.dumps(schema))  # the converter rewrites each $ref where it stands
    converter = _Converter()
    try:
        converter.visit(converter.resolve_refs(_root_ref_lifted(copy), _BASE), "")
    except Exception as exc:  # the converter's assertions, and what it trips over
        raise _explained(schema, copy, converter.visiting, exc) from None
    for ref, rule, holder in converter.resolved:
        if rule not in converter._rules:  # a $ref that leads only to itself: no rule was written
            raise UnsupportedSchema(
                f"the $ref {json.dumps(ref.removeprefix(_BASE))} leads back to itself through "
                "nothing but $refs, so it describes no value",
                _pointer_of(copy, holder),
            )
    grammar: str = converter.format_grammar()  # type: ignore[no-untyped-call]
    return grammar.replace(_LIBRARY_CHAR, _JSON_CHAR)


_LIBRARY_CHAR = 'char ::= [^"\\\\] |'
"""How llama-cpp-python's converter begins the rule of a character in a JSON string: any but a
quote or a backslash, so a raw newline or tab could be written inside a string, which JSON
forbids (a strict parser, `json.loads` included, then refuses the whole answer)."""
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'
"""JSON's own rule, as llama.cpp's converter writes it: no control character either (those are
written escaped, `\\n`, which the rule's other alternative allows)."""


class _PatternFailure(Exception):
    def __init__(self, pattern: str, cause: Exception) -> None:
        super().__init__(pattern)
        self.pattern = pattern
        self.cause = cause


class _Converter(SchemaConverter):
    """The library's converter, keeping the subschemas it is inside (the last one failed)."""

    def __init__(self) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )
        self.visiting: list[Any] = []
        self.resolved: list[tuple[str, str, Any]] = []
        """Each `$ref` followed: the reference, its rule's name, the subschema holding it."""

    def visit(self, schema: Any, name: str) -> str:
        if isinstance(schema, bool):  # it is inside the subschema on top of the stack
            raise UnsupportedSchema(
                f"it holds the boolean subschema {json.dumps(schema)}, which the grammar cannot "
                "follow; write a schema with a type instead"
            )
        self.visiting.append(schema)
        rule: str = super().visit(schema, name)  # type: ignore[no-untyped-call]
        self.visiting.pop()
        return rule

    def _resolve_ref(self, ref: str) -> str:
        rule: str = super()._resolve_ref(ref)  # type: ignore[no-untyped-call]
        self.resolved.append((ref, rule, self.visiting[-1] if self.visiting else None))
        return rule

    def _visit_pattern(self, pattern: str, name: str) -> str:
        try:
            rule: str = super()._visit_pattern(pattern, name)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise _PatternFailure(pattern, exc) from exc
        return rule


def _root_ref_lifted(schema: dict[str, Any]) -> dict[str, Any]:
    """A root `$ref` as the only alternative of an `anyOf`: the same schema, which the converter
    reads whole (beside a `$ref` it reads nothing, so the `$defs` at the root were never
    resolved, and a `$ref` within them failed)."""
    if "$ref" not in schema or "anyOf" in schema or "oneOf" in schema:
        return schema
    rest = {key: value for key, value in schema.items() if key != "$ref"}
    return {**rest, "anyOf": [{"$ref": schema["$ref"]}]}


def _explained(
    schema: dict[str, Any], copy: dict[str, Any], visiting: list[Any], exc: Exception
) -> UnsupportedSchema:
    """Why the converter failed, in the words of the schema's author."""
    draft: Any = jsonschema.Draft202012Validator
    if isinstance(schema.get("$schema"), str):
        draft = jsonschema.validators.validator_for(schema, default=draft)
    # Without formats: a pattern that Python's regular expressions do not read may still be
    # a JSON Schema's (ECMA-262's), and is explained as a pattern below.
    error = jsonschema.exceptions.best_match(draft(draft.META_SCHEMA).iter_errors(schema))
    if error is not None:
        return UnsupportedSchema(
            f"it is not a valid JSON Schema: {error.message}", _pointer(error.absolute_path)
        )
    for pointer, ref in _refs(schema):
        problem = _ref_problem(schema, ref)
        if problem:
            return UnsupportedSchema(problem, pointer)
    where = _pointer_of(copy, visiting[-1]) if visiting else ""
    if isinstance(exc, UnsupportedSchema):
        return UnsupportedSchema(exc.reason, where)
    if isinstance(exc, _PatternFailure):
        return UnsupportedSchema(_pattern_problem(exc), where + "/pattern")
    failing = visiting[-1] if visiting else schema
    if isinstance(exc, AssertionError) and str(exc).startswith("Unrecognized schema"):
        keywords = ", ".join(sorted(failing)) or "nothing"
        return UnsupportedSchema(
            f"the grammar cannot follow a schema of only {keywords}: give it a type, or one of "
            "properties, items, enum, const, anyOf, oneOf, allOf, $ref",
            where,
        )
    detail = str(exc)
    detail = detail if len(detail) <= 200 else detail[:200] + "…"
    return UnsupportedSchema(
        f"the grammar cannot follow this schema ({type(exc).__name__}: {detail})", where
    )


def _pattern_problem(failure: _PatternFailure) -> str:
    pattern, message = failure.pattern, str(failure.cause)
    if not (pattern.startswith("^") and pattern.endswith("$")):
        return (
            f"the pattern {pattern!r} must start with ^ and end with $: the grammar follows "
            "only patterns that match the whole string"
        )
    if message.startswith("Unsupported pattern syntax"):
        return (
            f"the pattern {pattern!r} has a group that begins with '(?' (a lookaround, a "
            "non-capturing or a named group), which the grammar cannot follow"
        )
    # The converter's own words (an invalid quantifier, unbalanced brackets), else none: what
    # it trips over (an index out of range) would say nothing to the schema's author.
    own = isinstance(failure.cause, AssertionError | ValueError) and message
    return f"the grammar cannot follow the pattern {pattern!r}" + (f": {message}" if own else "")


def _ref_problem(schema: dict[str, Any], ref: Any) -> str | None:
    """What is wrong with a `$ref` for the converter: it resolves `#/a/b` within the schema,
    segment by segment, without JSON pointer escapes."""
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return (
            f"the $ref {json.dumps(ref)} is not supported: only references within the schema "
            "('#/...') are"
        )
    target: Any = schema
    for part in ref[2:].split("/"):
        if not isinstance(target, dict) or part not in target:
            if "~" in ref:
                return f"the $ref {json.dumps(ref)} has JSON pointer escapes (~0, ~1): unsupported"
            return f"the $ref {json.dumps(ref)} points to nothing in the schema"
        target = target[part]
    return None


def _refs(schema: Any) -> Iterator[tuple[str, Any]]:
    """Every `$ref` in a schema, with the pointer of the subschema that holds it."""
    for pointer, item in _walk(schema):
        if isinstance(item, dict) and "$ref" in item:
            yield pointer, item["$ref"]


def _pointer_of(schema: Any, wanted: Any) -> str:
    """The pointer of `wanted` (that very object) within the schema; empty if it is not there."""
    return next((pointer for pointer, item in _walk(schema) if item is wanted), "")


def _walk(schema: Any) -> Iterator[tuple[str, Any]]:
    pending: list[tuple[str, Any]] = [("", schema)]
    while pending:
        pointer, item = pending.pop()
        yield pointer, item
        if isinstance(item, dict):
            pending.extend((f"{pointer}/{_escaped(k)}", v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            pending.extend((f"{pointer}/{i}", v) for i, v in reversed(list(enumerate(item))))


def _escaped(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _pointer(parts: Any) -> str:
    return "".join("/" + _escaped(part) for part in parts)
