"""GPT Actions readiness: a document and the server's settings against ChatGPT's rules.

The one home of these checks: `gptactions openapi --check` prints them, and the console's
readiness panel shows what `POST /openapi/check` answers for the document it loaded. Each
finding says where (a JSON pointer) and what to change, so a user can fix it without reading
OpenAI's documentation first.

ChatGPT's rules (OpenAI's GPT Actions documentation): one https server; a unique operationId
per operation; summaries and descriptions of at most 300 characters, parameter descriptions of
at most 700; object schemas list their properties; no exploded array query parameters; a call
answers within 45 seconds; request and response within 100,000 characters each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from gptactions.config import Settings
from gptactions.services.keys import KeyInfo

ROUND_TRIP_SECONDS = 45
CHATGPT_MAX_CHARS = 100_000
SUMMARY_LIMIT = 300
PARAMETER_DESCRIPTION_LIMIT = 700
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
LOGS_PATH = "/api/v1/gpt/logs"
_MAX_DEPTH = 64  # schemas nested deeper than this are not walked (a sent document is untrusted)
_MAX_VISITS = 50_000
"""The most steps (a schema sized, a `$ref` followed) one check takes: the document is
untrusted, and a check past this many answers TooComplex rather than compute on."""

# The checks, in the order the panel lists them: (rule, title).
RULES: tuple[tuple[str, str], ...] = (
    ("operationId", "Every operation has a unique operationId"),
    ("servers", "Exactly one server, with an https URL"),
    ("lengths", "Summaries and descriptions ≤ 300 characters, parameter descriptions ≤ 700"),
    ("properties", "Every object schema lists its properties"),
    ("explode", "No exploded array query parameters"),
    ("consequential", "POST operations state x-openai-isConsequential"),
    ("logs", "No GPT can read every user's log"),
    ("timeouts", "Every call answers within ChatGPT's 45 seconds"),
    ("size", "Responses stay within 100,000 characters"),
    ("privacy", "A privacy page with a contact"),
)


@dataclass(frozen=True)
class Finding:
    """One problem: which rule, how bad, where, what is wrong and how to fix it."""

    rule: str
    level: Literal["error", "warning"]
    pointer: str
    message: str
    fix: str


@dataclass(frozen=True)
class GptKey:
    """A key a GPT could be given (any key but an admin one): its name and scopes."""

    name: str
    scopes: frozenset[str]


def gpt_keys(keys: Sequence[KeyInfo]) -> list[GptKey]:
    """The keys a GPT could be given: those neither revoked nor admin."""
    return [
        GptKey(key.name, frozenset(key.scopes))
        for key in keys
        if key.revoked_at is None and "admin" not in key.scopes
    ]


def _esc(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


_NOTHING: dict[str, Any] = {}  # where a broken reference leads (read, never written)


class TooComplex(ValueError):
    """The document takes more than `_MAX_VISITS` steps to check."""


class _Walk:
    """One check's memory of a document: where each `$ref` leads, how long each schema's value
    can be at each depth, and how many steps it took (at most `_MAX_VISITS`), so that a check
    costs at most in proportion to the document, however its references fan out."""

    def __init__(self, doc: dict[str, Any], limit: int | None = None) -> None:
        self.doc = doc
        self.limit = _MAX_VISITS if limit is None else limit
        self.visits = 0
        self.refs: dict[str, Any] = {}
        self.sizes: dict[tuple[int, int], int | None] = {}

    def step(self) -> None:
        self.visits += 1
        if self.visits > self.limit:
            raise TooComplex(
                f"the document is too complex to check (more than {self.limit:,} schemas and "
                "references to follow)"
            )


def _resolve(doc: dict[str, Any], node: Any, walk: _Walk | None = None) -> Any:
    """`node`, its local `$ref` chain followed (a cycle or a dangling reference: {}); with
    `walk`, each reference's end is remembered, and each step counted."""
    walk = walk if walk is not None and walk.doc is doc else _Walk(doc)
    chain: dict[str, None] = {}  # the references followed, in order
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in walk.refs:
            node = walk.refs[ref]
            break
        if ref in chain or not ref.startswith("#/"):
            node = _NOTHING
            break
        walk.step()
        chain[ref] = None
        target: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        node = target
    node = node if node is not None else _NOTHING
    for ref in chain:  # each leads where the chain ends: a cycle, for one on a cycle
        walk.refs[ref] = node
    return node


def _operations(
    doc: dict[str, Any], walk: _Walk | None = None
) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(path, method, path item, operation) of every operation."""
    paths = doc.get("paths")
    for path, raw in (paths if isinstance(paths, dict) else {}).items():
        item = _resolve(doc, raw, walk)
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                yield str(path), method, item, operation


def _schemas(
    doc: dict[str, Any], walk: _Walk | None = None
) -> Iterator[tuple[dict[str, Any], str]]:
    """Every schema in the document (inline and under components), once each, with its pointer
    (each written once: a `$ref` is not followed, so this is as long as the document)."""
    seen: set[int] = set()
    stack: list[tuple[Any, str, int]] = []
    components = doc.get("components") if isinstance(doc.get("components"), dict) else {}
    assert isinstance(components, dict)

    def content(node: Any, pointer: str) -> None:
        for media, body in (node.get("content") or {}).items() if isinstance(node, dict) else ():
            if isinstance(body, dict) and "schema" in body:
                stack.append((body["schema"], f"{pointer}/content/{_esc(media)}/schema", 0))

    for name, schema in (components.get("schemas") or {}).items():
        stack.append((schema, f"/components/schemas/{_esc(name)}", 0))
    for section in ("responses", "requestBodies"):
        for name, node in (components.get(section) or {}).items():
            content(node, f"/components/{section}/{_esc(name)}")
    for name, node in (components.get("parameters") or {}).items():
        if isinstance(node, dict) and "schema" in node:
            stack.append((node["schema"], f"/components/parameters/{_esc(name)}/schema", 0))
    for path, method, _, operation in _operations(doc, walk):
        base = f"/paths/{_esc(path)}/{method}"
        for i, parameter in enumerate(operation.get("parameters") or []):
            if isinstance(parameter, dict) and "schema" in parameter:
                stack.append((parameter["schema"], f"{base}/parameters/{i}/schema", 0))
        body = operation.get("requestBody")
        if isinstance(body, dict) and "$ref" not in body:
            content(body, f"{base}/requestBody")
        for code, answer in (operation.get("responses") or {}).items():
            if isinstance(answer, dict) and "$ref" not in answer:
                content(answer, f"{base}/responses/{_esc(code)}")
    stack.reverse()
    while stack:
        node, pointer, depth = stack.pop()
        if not isinstance(node, dict) or id(node) in seen or "$ref" in node or depth > _MAX_DEPTH:
            continue
        seen.add(id(node))
        yield node, pointer
        below: list[tuple[Any, str, int]] = []
        properties = node.get("properties")
        for key, sub in (properties if isinstance(properties, dict) else {}).items():
            below.append((sub, f"{pointer}/properties/{_esc(key)}", depth + 1))
        for keyword in ("items", "additionalProperties", "not"):
            if isinstance(node.get(keyword), dict):
                below.append((node[keyword], f"{pointer}/{keyword}", depth + 1))
        for keyword in ("oneOf", "anyOf", "allOf"):
            for i, sub in enumerate(node.get(keyword) or []):
                below.append((sub, f"{pointer}/{keyword}/{i}", depth + 1))
        stack.extend(reversed(below))


def _has_type(schema: dict[str, Any], kind: str) -> bool:
    declared = schema.get("type")
    return declared == kind or (isinstance(declared, list) and kind in declared)


def _signed_in_only(doc: dict[str, Any], operation: dict[str, Any]) -> bool:
    """Whether the operation is called only with a user's OAuth token (never an API key)."""
    security = operation.get("security", doc.get("security"))
    schemes = doc.get("components", {}).get("securitySchemes", {})
    names = {name for requirement in security or () for name in requirement}
    return bool(names) and all(
        isinstance(schemes.get(name), dict) and schemes[name].get("type") == "oauth2"
        for name in names
    )


def check_document(doc: dict[str, Any]) -> list[Finding]:
    """What ChatGPT's import would refuse or warn about in the document itself."""
    findings: list[Finding] = []
    walk = _Walk(doc)

    def add(rule: str, level: Literal["error", "warning"], at: str, message: str, fix: str) -> None:
        findings.append(Finding(rule, level, at, message, fix))

    servers = [s for s in doc.get("servers") or [] if isinstance(s, dict)]
    https = [str(s.get("url", "")) for s in servers if str(s.get("url", "")).startswith("https://")]
    if not servers:
        add(
            "servers",
            "error",
            "/servers",
            "The document names no server.",
            "Set GPTACTIONS_PUBLIC_URL to the public https URL of this API.",
        )
    elif not https:
        urls = ", ".join(str(s.get("url")) for s in servers)
        add(
            "servers",
            "error",
            "/servers",
            f"No https server URL (found {urls}).",
            "ChatGPT only calls https URLs: serve this over https and set GPTACTIONS_PUBLIC_URL "
            "to that URL (behind a proxy, list it in GPTACTIONS_TRUSTED_PROXIES so that its "
            "X-Forwarded-Proto and X-Forwarded-Host count).",
        )
    elif len(servers) > 1:
        add(
            "servers",
            "error",
            "/servers",
            f"{len(servers)} servers are listed; GPT Actions needs exactly one.",
            f"Keep only {https[0]} (unset GPTACTIONS_SERVERS).",
        )

    operation_ids: dict[str, str] = {}
    for path, method, item, operation in _operations(doc, walk):
        base = f"/paths/{_esc(path)}/{method}"
        label = f"{method.upper()} {path}"
        operation_id = operation.get("operationId")
        if not operation_id:
            add(
                "operationId",
                "error",
                base,
                f"{label} has no operationId.",
                "Give it a unique operationId; ChatGPT names the action's function after it.",
            )
        elif operation_id in operation_ids:
            add(
                "operationId",
                "error",
                f"{base}/operationId",
                f'operationId "{operation_id}" is used by {operation_ids[operation_id]} '
                f"and {label}.",
                "Make every operationId unique.",
            )
        else:
            operation_ids[str(operation_id)] = label
        for field in ("summary", "description"):
            text = operation.get(field)
            if isinstance(text, str) and len(text) > SUMMARY_LIMIT:
                add(
                    "lengths",
                    "error",
                    f"{base}/{field}",
                    f"The {field} of {label} is {len(text)} characters long.",
                    f"Shorten it to at most {SUMMARY_LIMIT} characters.",
                )
        if method == "post" and "x-openai-isConsequential" not in operation:
            add(
                "consequential",
                "warning",
                base,
                f"{label} does not state x-openai-isConsequential.",
                "Add `x-openai-isConsequential: false` (or true when every call must be "
                "confirmed by the user).",
            )
        if path == LOGS_PATH and not _signed_in_only(doc, operation):
            # Under OAuth alone, /logs answers the signed-in user's own interactions only.
            add(
                "logs",
                "warning",
                base,
                f"The document offers {label}: a GPT with a key holding `logs` can read every "
                "user's messages.",
                "Import /openapi.json?scopes=chat,actions instead, which leaves /logs out.",
            )
        for raw in [*(item.get("parameters") or []), *(operation.get("parameters") or [])]:
            parameter = _resolve(doc, raw, walk)
            if not isinstance(parameter, dict):
                continue
            name = parameter.get("name", "?")
            at = f"{base}/parameters/{_esc(name)}"
            description = parameter.get("description")
            if isinstance(description, str) and len(description) > PARAMETER_DESCRIPTION_LIMIT:
                add(
                    "lengths",
                    "error",
                    f"{at}/description",
                    f'The description of parameter "{name}" is {len(description)} characters long.',
                    f"Shorten it to at most {PARAMETER_DESCRIPTION_LIMIT} characters.",
                )
            schema = _resolve(doc, parameter.get("schema"), walk)
            style = parameter.get("style", "form")
            explode = parameter.get("explode", style == "form")
            if (
                parameter.get("in") == "query"
                and isinstance(schema, dict)
                and _has_type(schema, "array")
                and explode
            ):
                add(
                    "explode",
                    "error",
                    at,
                    f'Query parameter "{name}" is an exploded array (?{name}=a&{name}=b).',
                    "ChatGPT cannot send exploded arrays: set `explode: false` or take a single "
                    "value.",
                )
        for code, raw_answer in (operation.get("responses") or {}).items():
            answer = _resolve(doc, raw_answer, walk)
            if not str(code).startswith("2") or not isinstance(answer, dict):
                continue
            media = answer.get("content")
            body = media.get("application/json") if isinstance(media, dict) else None
            schema = body.get("schema") if isinstance(body, dict) else None
            most = longest(doc, schema, walk=walk)
            if most is not None and most > CHATGPT_MAX_CHARS:
                add(
                    "size",
                    "warning",
                    f"{base}/responses/{_esc(code)}",
                    f"The {code} answer of {label} can be {most:,} characters long (from the "
                    "maxLength and maxItems of its schema).",
                    f"Lower maxItems or maxLength so that it stays under {CHATGPT_MAX_CHARS:,}; "
                    "ChatGPT refuses longer answers.",
                )

    for schema, pointer in _schemas(doc, walk):
        if (
            _has_type(schema, "object")
            and "properties" not in schema
            and not any(k in schema for k in ("oneOf", "anyOf", "allOf"))
        ):
            add(
                "properties",
                "error",
                pointer,
                "An object schema without `properties`.",
                "List its properties (an empty `properties: {}` with `additionalProperties: "
                "true` for free-form objects).",
            )
    return findings


def longest(
    doc: dict[str, Any], schema: Any, depth: int = 0, *, walk: _Walk | None = None
) -> int | None:
    """The most characters a JSON value of `schema` can take, from its maxLength and maxItems
    (and enums, numbers, booleans); None when nothing bounds it (nor when it nests deeper than
    `_MAX_DEPTH`, as a schema that holds itself does).

    Each schema is sized once per depth (`walk` remembers it), however many `$ref`s lead to it:
    at most `_MAX_DEPTH` times the document's size, and past `_MAX_VISITS` steps, TooComplex.
    """
    walk = walk if walk is not None and walk.doc is doc else _Walk(doc)
    schema = _resolve(doc, schema, walk)
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    key = (id(schema), depth)
    if key not in walk.sizes:
        walk.step()
        walk.sizes[key] = _longest(doc, schema, depth, walk)
    return walk.sizes[key]


def _longest(doc: dict[str, Any], schema: dict[str, Any], depth: int, walk: _Walk) -> int | None:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return max(len(json.dumps(value)) for value in schema["enum"])
    for keyword in ("oneOf", "anyOf"):
        if isinstance(schema.get(keyword), list) and schema[keyword]:
            options = [longest(doc, option, depth + 1, walk=walk) for option in schema[keyword]]
            return None if None in options else max(o for o in options if o is not None)
    if _has_type(schema, "string"):
        bound = schema.get("maxLength")
        return bound + 2 if isinstance(bound, int) else None
    if _has_type(schema, "integer") or _has_type(schema, "number"):
        return 24
    if _has_type(schema, "boolean"):
        return 5
    if _has_type(schema, "array"):
        count = schema.get("maxItems")
        item = longest(doc, schema.get("items"), depth + 1, walk=walk)
        if not isinstance(count, int) or item is None:
            return None
        return 2 + count * (item + 1)
    properties = schema.get("properties")
    if _has_type(schema, "object") and isinstance(properties, dict):
        if schema.get("additionalProperties", True) is not False:
            return None
        total = 2
        for name, sub in properties.items():
            bound = longest(doc, sub, depth + 1, walk=walk)
            if bound is None:
                return None
            total += len(json.dumps(name)) + 2 + bound
        return total
    return None


def check_settings(settings: Settings, gpt_keys: Sequence[GptKey] = ()) -> list[Finding]:
    """What in the server's settings (and keys) breaks ChatGPT's rules for a public GPT."""
    findings: list[Finding] = []
    timeouts: list[tuple[str, float]] = []
    if settings.upstream_url:
        timeouts.append(("GPTACTIONS_UPSTREAM_TIMEOUT", settings.upstream_timeout))
    timeouts += [(f"the timeout of backend {b.name!r}", b.timeout) for b in settings.backends]
    timeouts.append(("GPTACTIONS_REQUEST_DEADLINE", settings.request_deadline))
    timeouts.append(("GPTACTIONS_TEMPLATE_TIMEOUT", settings.template_timeout))
    for name, seconds in timeouts:
        if seconds > ROUND_TRIP_SECONDS:
            findings.append(
                Finding(
                    "timeouts",
                    "warning",
                    "/settings",
                    f"{name} is {seconds:g} s; ChatGPT gives up on a call after "
                    f"{ROUND_TRIP_SECONDS} s and shows the user an error.",
                    f"Set it below {ROUND_TRIP_SECONDS} s (35 s leaves room for the network).",
                )
            )
    if settings.max_response_chars > CHATGPT_MAX_CHARS:
        findings.append(
            Finding(
                "size",
                "warning",
                "/settings",
                f"GPTACTIONS_MAX_RESPONSE_CHARS is {settings.max_response_chars:,}: answers may "
                f"be longer than ChatGPT's {CHATGPT_MAX_CHARS:,} characters.",
                f"Set it to {CHATGPT_MAX_CHARS:,} or less.",
            )
        )
    if not settings.privacy_contact:
        findings.append(
            Finding(
                "privacy",
                "warning",
                "/settings",
                "The privacy page (/privacy), which a public GPT must link to, names no contact.",
                "Set GPTACTIONS_PRIVACY_CONTACT (an e-mail address, say), and give this "
                "server's /privacy URL as the GPT's privacy policy.",
            )
        )
    for key in gpt_keys:
        if "logs" in key.scopes:
            findings.append(
                Finding(
                    "logs",
                    "warning",
                    "/keys",
                    f"The key {key.name!r} has the `logs` scope: a GPT given it lets any of its "
                    "users read every user's messages through /logs.",
                    "Give a GPT a key with only `chat` and `actions` (gptactions keys create "
                    "--scope chat --scope actions), or use OAuth, whose `logs` reads the "
                    "user's own log only.",
                )
            )
    return findings


def check(
    doc: dict[str, Any], settings: Settings, gpt_keys: Sequence[GptKey] = ()
) -> list[Finding]:
    """Every finding, the document's first, in the order of RULES."""
    order = {rule: i for i, (rule, _) in enumerate(RULES)}
    found = check_document(doc) + check_settings(settings, gpt_keys)
    return sorted(found, key=lambda finding: order[finding.rule])


def lines(findings: Sequence[Finding]) -> list[str]:
    """The findings as text for the terminal, ending with a verdict."""
    out: list[str] = []
    for finding in findings:
        mark = "error" if finding.level == "error" else "warning"
        out += [
            f"{mark}: [{finding.rule}] {finding.message}",
            f"  at {finding.pointer}",
            f"  fix: {finding.fix}",
        ]
    if not findings:
        return ["Ready: ChatGPT's GPT Actions can import this document as it is."]
    errors = sum(1 for f in findings if f.level == "error")
    out.append(
        f"{len(findings)} thing(s) to fix before importing this document into a GPT "
        f"({errors} error(s), {len(findings) - errors} warning(s))."
    )
    return out


def report(findings: Sequence[Finding]) -> dict[str, Any]:
    """The answer of POST /openapi/check: the rules and the findings."""
    return {
        "rules": [{"rule": rule, "title": title} for rule, title in RULES],
        "findings": [asdict(finding) for finding in findings],
    }
