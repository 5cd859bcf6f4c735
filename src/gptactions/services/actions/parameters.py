"""An action's parameters as its handler gets them: unknown ones set aside, a stand-in taken.

The seed's `parameters` admit any property, and callers (GPTs, people trying the API) name the
main text as they like (`prompt`, `input`, ...). So a property the action's schema does not name
is ignored, with a warning, unless the schema forbids it (`additionalProperties: false`, which a
user-defined action may declare); and an action's primary text parameter (`primary`), when it is
missing, is taken from the one common stand-in sent for it, with a warning too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gptactions.services.errors import Problem, json_pointer

STAND_INS = (
    "prompt",
    "input",
    "content",
    "text",
    "query",
    "task",
    "instructions",
    "request",
    "description",
    "code",
    "question",
    "message",
)
"""The names a caller may give an action's primary text parameter under, when it is missing."""


@dataclass(frozen=True)
class PreparedParameters:
    """The parameters for the handler, what was changed on the way (`warnings`), and what is
    wrong with them (`problems`: the call is a 400 when there is any)."""

    parameters: Any
    warnings: tuple[str, ...] = ()
    problems: list[Problem] = field(default_factory=list)


def prepare_parameters(
    action: str,
    schema: dict[str, Any],
    check: Callable[[Any], list[Problem]],
    parameters: Any,
    primary: str | None = None,
) -> PreparedParameters:
    """`parameters` checked (`check`: the problems against the action's schema), with unknown
    properties ignored where the schema allows them, and the primary parameter taken from a
    stand-in when missing."""
    if not isinstance(parameters, dict):
        return PreparedParameters(parameters, (), check(parameters))
    known = schema.get("properties", {}) if isinstance(schema.get("properties"), dict) else {}
    kept = dict(parameters)
    warnings: list[str] = []
    problems: list[Problem] = []
    stand_in: str | None = None
    if primary is not None and primary not in kept:
        found = [name for name in STAND_INS if name in kept and name not in known]
        strings = [name for name in found if isinstance(kept[name], str)]
        if len(found) == 1 and strings:
            stand_in = found[0]
            kept[primary] = kept.pop(stand_in)
            warnings.append(
                f"parameters/{_escaped(stand_in)} is not a parameter of {action} and was taken "
                f"as its {primary}"
            )
        elif found:
            problems.append(Problem(json_pointer(["parameters", primary]), _not_taken(found)))
    if _ignores_unknown(schema):
        ignored = [name for name in kept if not _named(schema, known, name)]
        for name in ignored:
            del kept[name]
        # Named one by one up to a few: the answer must stay within its size for the result.
        for name in ignored[:MAX_NAMED_IGNORED]:
            warnings.append(
                f"parameters/{_escaped(name)[:_NAME_SHOWN]} is not a parameter of {action} and "
                "was ignored"
            )
        if len(ignored) > MAX_NAMED_IGNORED:
            warnings.append(
                f"{len(ignored) - MAX_NAMED_IGNORED:,} more parameters that {action} does not "
                "take were ignored"
            )
    found_problems = check(kept)
    if stand_in is not None:
        found_problems = [_moved(p, primary or "", stand_in) for p in found_problems]
    said = {p.pointer for p in problems}
    problems += [p for p in found_problems if p.pointer not in said]
    return PreparedParameters(kept, tuple(warnings), sorted(problems, key=lambda p: p.pointer))


MAX_NAMED_IGNORED = 10
"""The most ignored parameters the warnings name one by one; the rest are counted."""
_NAME_SHOWN = 100
"""The most characters of an ignored parameter's name a warning repeats."""


def _not_taken(found: list[str]) -> str:
    if len(found) == 1:
        return f"is required ({found[0]} was sent in its place, but is not a string)"
    return (
        f"is required ({', '.join(found)} were sent, and only one of them could be taken in "
        "its place)"
    )


def _ignores_unknown(schema: dict[str, Any]) -> bool:
    """Whether the schema lets any property through unchecked: then one it does not name means
    nothing to the action. An author's `additionalProperties: false` (or a schema for them)
    is kept as written."""
    return schema.get("additionalProperties", True) is True


def _named(schema: dict[str, Any], known: dict[str, Any], name: str) -> bool:
    patterns = schema.get("patternProperties")
    if name in known:
        return True
    return isinstance(patterns, dict) and any(re.search(p, name) for p in patterns)


def _escaped(name: str) -> str:
    return json_pointer([name])[1:]


def _moved(problem: Problem, primary: str, stand_in: str) -> Problem:
    """A problem of the primary parameter, said where the caller put it: at the stand-in."""
    old, new = json_pointer(["parameters", primary]), json_pointer(["parameters", stand_in])
    if problem.pointer == old or problem.pointer.startswith(old + "/"):
        return Problem(new + problem.pointer[len(old) :], problem.message)
    return problem
