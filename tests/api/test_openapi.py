"""The served document is a faithful superset of the seed's, valid, and matches the app's routes."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from gptactions.api.openapi import build_document
from gptactions.api.readiness import SUMMARY_LIMIT
from gptactions.config import Settings
from gptactions.services.actions import build_registry
from tests.conftest import ApiClient

SEED = yaml.safe_load((Path(__file__).parents[1] / "data" / "seed-openapi.yaml").read_text())
HTTP_METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def resolve(document: dict[str, Any], node: Any) -> Any:
    """Follow $ref until a concrete schema (the seed inlines what the server may reference)."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def assert_schema_superset(
    seed: dict[str, Any], served: dict[str, Any], where: str, doc: dict[str, Any]
) -> None:
    """Every keyword of the seed's schema holds in the served one, property by property."""
    served = resolve(doc, served)
    seed = resolve(SEED, seed)
    for keyword, value in seed.items():
        if keyword == "properties":
            for name, subschema in value.items():
                assert name in served.get("properties", {}), f"{where}: property {name} is missing"
                assert_schema_superset(
                    subschema, served["properties"][name], f"{where}.{name}", doc
                )
        elif keyword == "items":
            assert_schema_superset(value, served["items"], f"{where}[]", doc)
        elif keyword == "required":
            assert set(value) <= set(served.get("required", [])), f"{where}: required changed"
        elif keyword == "additionalProperties":
            assert served.get(keyword) == value, f"{where}: additionalProperties changed"
        else:
            assert served.get(keyword) == value, f"{where}: {keyword} changed"


@pytest.fixture
async def served(api: ApiClient) -> dict[str, Any]:
    response = await api.http.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_the_document_needs_no_key_and_yaml_equals_json(
    api: ApiClient, served: dict[str, Any]
) -> None:
    response = await api.http.get("/openapi.yaml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(response.text) == served


def test_the_document_is_valid_openapi(served: dict[str, Any]) -> None:
    assert served["openapi"] == "3.0.3"
    validate(served)


def _refs_with_siblings(node: Any, where: str = "#") -> list[str]:
    if isinstance(node, list):
        return [w for i, item in enumerate(node) for w in _refs_with_siblings(item, f"{where}/{i}")]
    if not isinstance(node, dict):
        return []
    found = [where] if "$ref" in node and len(node) > 1 else []
    return found + [w for k, v in node.items() for w in _refs_with_siblings(v, f"{where}/{k}")]


@pytest.mark.parametrize("query", ["", "?scopes=chat,actions,logs"])
async def test_no_ref_has_keys_beside_it(api: ApiClient, query: str) -> None:
    # OpenAPI 3.0 ignores keys beside a $ref: a `nullable` there is lost on strict clients,
    # which then reject the null finishReason of a rejected request in /logs.
    document = (await api.http.get("/openapi.json" + query)).json()
    assert _refs_with_siblings(document) == []
    # OpenAPI 3.0.3 adds null only beside a `type`, and to an enum only when it lists null.
    registry = Registry().with_resource(
        "urn:doc", Resource.from_contents(document, default_specification=DRAFT4)
    )
    validator = OAS30Validator({"$ref": "urn:doc#/components/schemas/LogItem"}, registry=registry)
    await api.post("/api/v1/gpt/conversations", {"userId": "u", "message": "hi"})
    await api.post("/api/v1/gpt/conversations", {"userId": "u"})  # rejected: null finishReason
    rows = (await api.get("/api/v1/gpt/logs")).json()
    assert sorted(str(row["finishReason"]) for row in rows) == ["None", "stop"]
    for row in rows:
        assert not list(validator.iter_errors(row)), row
    assert list(validator.iter_errors({**rows[0], "finishReason": "maybe"}))


def test_every_seed_path_method_and_response_is_served(served: dict[str, Any]) -> None:
    for path, item in SEED["paths"].items():
        assert path in served["paths"], path
        for method, operation in item.items():
            served_operation = served["paths"][path][method]
            assert served_operation["summary"] == operation["summary"]
            for code, response in operation["responses"].items():
                served_response = resolve(served, served_operation["responses"][code])
                assert served_response["description"] == response["description"]
                for media, content in response.get("content", {}).items():
                    assert_schema_superset(
                        content["schema"],
                        served_response["content"][media]["schema"],
                        f"{method.upper()} {path} {code}",
                        served,
                    )
            if "requestBody" in operation:
                seed_body = operation["requestBody"]
                served_body = served_operation["requestBody"]
                assert served_body["required"] == seed_body["required"]
                assert_schema_superset(
                    seed_body["content"]["application/json"]["schema"],
                    served_body["content"]["application/json"]["schema"],
                    f"{method.upper()} {path} body",
                    served,
                )


def test_every_seed_schema_and_the_security_scheme_are_kept(served: dict[str, Any]) -> None:
    for name, schema in SEED["components"]["schemas"].items():
        assert_schema_superset(schema, served["components"]["schemas"][name], name, served)
    scheme = served["components"]["securitySchemes"]["ApiKeyAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert served["security"][: len(SEED["security"])] == SEED["security"]
    oauth = served["components"]["securitySchemes"]["OAuth2"]["flows"]["authorizationCode"]
    assert oauth["authorizationUrl"].endswith("/oauth/authorize")
    assert {"OAuth2": []} in served["security"]
    assert served["info"]["title"] == SEED["info"]["title"]


def test_operation_ids_are_unique_and_posts_state_consequence(served: dict[str, Any]) -> None:
    ids = [
        op["operationId"]
        for item in served["paths"].values()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    assert len(ids) == len(set(ids)) and all(ids)
    for item in served["paths"].values():
        if "post" in item:
            assert "x-openai-isConsequential" in item["post"]


def test_errors_are_documented_with_the_error_schema(served: dict[str, Any]) -> None:
    for path, item in served["paths"].items():
        # The OpenAI-compatible API answers in OpenAI's error shape, which its clients parse.
        schema = "OpenAIError" if path.startswith("/v1/") else "Error"
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            response = resolve(served, operation["responses"]["401"])
            assert response["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{schema}"
            }


def test_every_keyed_operation_documents_the_503_any_request_can_get(
    served: dict[str, Any],
) -> None:
    """A key's revocation check reads the database, and a restarting server ends requests: a
    503 (database_unavailable, server_restarting) can answer any keyed operation, GETs too."""
    for path, item in served["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS and "401" in operation["responses"]:
                assert "503" in operation["responses"], f"{method.upper()} {path}"


def test_the_openai_compatible_api_is_under_its_own_tag(served: dict[str, Any]) -> None:
    tagged = {
        (method, path)
        for path, item in served["paths"].items()
        for method, operation in item.items()
        if "OpenAI-compatible" in operation.get("tags", [])
    }
    assert tagged == {
        ("post", "/v1/chat/completions"),
        ("get", "/v1/models"),
        ("get", "/v1/models/{model}"),
    }
    assert [t["name"] for t in served["tags"]] == ["OpenAI-compatible"]


async def test_every_api_route_of_the_app_is_documented(
    api: ApiClient, served: dict[str, Any]
) -> None:
    from fastapi.routing import APIRoute

    app = api.http._transport.app  # type: ignore[attr-defined]
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith(("/api/", "/v1/")):
            for method in route.methods:
                assert method.lower() in served["paths"][route.path], (method, route.path)


def test_servers_come_from_configuration() -> None:
    registry = build_registry(Settings())
    default = build_document(Settings(), registry, ["local"])
    # Never the seed's placeholders: where the server listens (the served one: the request's URL).
    assert default["servers"] == [{"url": "http://127.0.0.1:8000", "description": "This server"}]
    assert default["servers"] != SEED["servers"]
    configured = build_document(
        Settings(public_url="https://gpt.example.org/", servers=["https://sandbox.example.org"]),
        registry,
        ["local"],
    )
    assert [s["url"] for s in configured["servers"]] == [
        "https://gpt.example.org",
        "https://sandbox.example.org",
    ]


def test_descriptions_fit_gpt_actions_limits(served: dict[str, Any]) -> None:
    for item in served["paths"].values():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                assert len(operation.get("description", "")) <= 300
                assert len(operation.get("summary", "")) <= 300
                for parameter in operation.get("parameters", []):
                    assert len(parameter.get("description", "")) <= 700


def test_servers_read_from_the_environment_as_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GPTACTIONS_SERVERS", "https://a.example.org, https://b.example.org")
    assert Settings().servers == ["https://a.example.org", "https://b.example.org"]
    monkeypatch.setenv("GPTACTIONS_SERVERS", '["https://c.example.org"]')
    assert Settings().servers == ["https://c.example.org"]


async def test_the_console_is_served_without_a_key_under_a_strict_policy(api: ApiClient) -> None:
    page = await api.http.get("/")
    assert page.status_code == 200 and "GPT API Interface" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "base-uri 'none'" in page.headers["content-security-policy"]  # no <base> injected
    assert page.headers["referrer-policy"] == "no-referrer"  # nothing of the console leaks out
    asset = await api.http.get("/console/console.css")
    assert asset.status_code == 200 and asset.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("value", ["\u001c", "\u0085", "\ufeff", "\u3000", " a "])
async def test_the_documents_patterns_and_the_server_agree_on_what_is_blank(
    api: ApiClient, served: dict[str, Any], value: str
) -> None:
    """Python's `\\s` and JavaScript's differ (U+001C-U+001F, U+0085, U+FEFF): the document
    spells its whitespace out, so a client in either language reads it as the server checks."""
    request = served["components"]["schemas"]["ConversationRequest"]["properties"]
    for name in ("userId", "message"):
        fits = re.search(request[name]["pattern"], value) is not None
        body = {"userId": "ada", "message": "hi"} | {name: value}
        answer = await api.post("/api/v1/gpt/conversations", body)
        refused = answer.status_code == 400 and any(
            d["pointer"] == f"/{name}" for d in answer.json()["error"]["details"]
        )
        assert refused is not fits, (name, answer.status_code, answer.text)


@pytest.mark.parametrize("value", [123, "", "c" * 65, "a\u0000b"])
async def test_conversations_checks_a_conversation_id_as_the_document_says(
    api: ApiClient, served: dict[str, Any], value: object
) -> None:
    """/conversations does not use conversationId but refuses one that breaks its schema: the
    description says so, and does not say it is ignored."""
    schema = served["components"]["schemas"]["ConversationRequest"]["properties"]
    description = schema["conversationId"]["description"]
    assert "ignored" not in description.lower()
    assert "/conversations checks it" in description
    answer = await api.post(
        "/api/v1/gpt/conversations", {"userId": "ada", "message": "hi", "conversationId": value}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["details"][0]["pointer"] == "/conversationId"


def _undescribed(document: dict[str, Any]) -> list[str]:
    """Every property, at any depth, of the schemas the /api/v1/gpt operations reach (their
    bodies, answers and parameters, through $refs) that has neither a description nor a $ref."""
    components = document["components"]
    found: list[str] = []
    seen: set[str] = set()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}/{i}")
            return
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            _, _, section, name = node["$ref"].split("/", 3)
            if f"{section}/{name}" not in seen:
                seen.add(f"{section}/{name}")
                walk(components[section][name], name)
            return
        for name, prop in node.get("properties", {}).items():
            if "$ref" not in prop and "description" not in prop:
                found.append(f"{where}.{name}")
            elif len(prop.get("description", "")) > SUMMARY_LIMIT:  # ChatGPT's limit
                found.append(f"{where}.{name} (described in over {SUMMARY_LIMIT} characters)")
            walk(prop, f"{where}.{name}")
        for keyword in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            walk(node.get(keyword), f"{where}/{keyword}")

    for path, item in document["paths"].items():
        if not path.startswith("/api/v1/gpt/"):
            continue
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            where = f"{method.upper()} {path}"
            for media in operation.get("requestBody", {}).get("content", {}).values():
                walk(media.get("schema"), f"{where} body")
            for code, answer in operation.get("responses", {}).items():
                answer = resolve(document, answer)
                for media in answer.get("content", {}).values():
                    walk(media.get("schema"), f"{where} {code}")
            for parameter in map(partial(resolve, document), operation.get("parameters", [])):
                walk(parameter.get("schema"), f"{where} ?{parameter['name']}")
    return found


@pytest.mark.parametrize("query", [{}, {"scopes": "chat,actions", "auth": "oauth"}])
async def test_every_property_a_gpt_reads_is_described(
    api: ApiClient, query: dict[str, str]
) -> None:
    """ChatGPT's model reads the document a GPT imports: a property without a description is
    one it has to guess (docs/gpt-actions.md promises every property of MeResponse,
    MyDataExport and Erasure described)."""
    document = (await api.http.get("/openapi.json", params=query)).json()
    assert "MyDataExport" in document["components"]["schemas"]  # the walk reaches /me/export
    assert _undescribed(document) == []
