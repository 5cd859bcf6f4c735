"""The actions through the HTTP API: listing, 400s with pointers, success: false, logs, document."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from gptactions.config import Settings
from gptactions.llm.base import BackendUnavailable
from gptactions.llm.fake import FakeBackend
from gptactions.llm.local import LocalBackend
from tests.conftest import ApiClient, _KeepLoaded, running_app

from .conftest import HAIKU_YAML

API = "/api/v1/gpt"
WriteFile = Callable[[str, str], Path]


@pytest.fixture
async def app(
    settings: Settings, fake: FakeBackend, write_file: WriteFile
) -> AsyncIterator[ApiClient]:
    """The app with the haiku action of the issue, over the fake backend."""
    configured = settings.model_copy(
        update={"actions_file": write_file("actions.yaml", HAIKU_YAML)}
    )
    async with running_app(configured, fake) as client:
        yield client


async def _logs(api: ApiClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await api.get(f"{API}/logs")).json()
    return items


async def test_the_list_has_every_action_with_its_schema(app: ApiClient) -> None:
    response = await app.get(f"{API}/actions")
    assert response.status_code == 200
    actions = {a["name"]: a for a in response.json()["actions"]}
    assert len(actions) == 10
    assert actions["haiku"] == {
        "name": "haiku",
        "description": "Write a haiku about a topic.",
        "parameters": {
            "type": "object",
            "required": ["topic"],
            "properties": {"topic": {"type": "string", "maxLength": 200}},
        },
        "builtin": False,
        "consequential": False,
    }
    assert actions["classify"]["builtin"] is True
    assert actions["classify"]["parameters"]["required"] == ["text", "labels"]


async def test_the_list_needs_a_key_with_the_actions_scope(app: ApiClient) -> None:
    assert (await app.get(f"{API}/actions", key=None)).status_code == 401
    chat_only = await app.key(scopes=("chat",))
    assert (await app.get(f"{API}/actions", key=chat_only)).status_code == 403
    actions_only = await app.key(scopes=("actions",))
    assert (await app.get(f"{API}/actions", key=actions_only)).status_code == 200


async def test_an_unknown_action_is_a_400_naming_the_available_ones(app: ApiClient) -> None:
    response = await app.post(f"{API}/actions", {"action": "summarise", "parameters": {}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith("Invalid input: action: must be one of: ")
    for name in ("summarize", "haiku", "classify"):
        assert name in error["message"]
    assert [d["pointer"] for d in error["details"]] == ["/action"]
    assert error["message"] == "Invalid input: action: " + error["details"][0]["message"]


async def test_bad_parameters_are_a_400_with_a_pointer_for_each(
    app: ApiClient, fake: FakeBackend
) -> None:
    response = await app.post(
        f"{API}/actions",
        {
            "action": "classify",
            "parameters": {"text": "x" * 20_001, "labels": [], "multiLabel": "yes", "extra": 1},
        },
    )
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    # `extra` is not one of them: an unknown parameter is ignored (with a warning, on a 200).
    assert sorted(d["pointer"] for d in details) == [
        "/parameters/labels",
        "/parameters/multiLabel",
        "/parameters/text",
    ]
    messages = {d["pointer"]: d["message"] for d in details}
    # Said in the API's words, without quoting the 20,001 characters back.
    assert messages["/parameters/text"].startswith("must be at most ")
    assert messages["/parameters/text"].endswith(" characters")
    assert messages["/parameters/multiLabel"] == "must be true or false"
    assert len(response.content) < 2_000
    missing = await app.post(f"{API}/actions", {"action": "haiku", "parameters": {}})
    assert missing.json()["error"]["details"] == [
        {"pointer": "/parameters/topic", "message": "is required"}
    ]
    assert fake.requests == []
    assert [entry["kind"] for entry in await _logs(app)] == ["rejected", "rejected"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"action": "translate", "parameters": {"text": "hi"}},
            "Invalid input: parameters/targetLanguage: is required",
        ),
        (
            {"action": "summarize", "parameters": {"text": "t", "maxWords": "50"}},
            "Invalid input: parameters/maxWords: must be an integer",
        ),
        (
            {"action": "summarize", "parameters": {"text": ""}},
            "Invalid input: parameters/text: must not be empty or only whitespace",
        ),
        (
            {"action": "sentiment", "parameters": {"text": "x" * 20_001}},
            "Invalid input: parameters/text: must be at most 20000 characters",
        ),
        # Several problems: the message names the first, as a body's does; details hold all.
        (
            {"action": "translate", "parameters": {"text": "", "targetLanguage": 5}},
            "Invalid input: parameters/targetLanguage: must be a string",
        ),
        (
            {"action": "summarize", "parameters": {"text": "t"}, "model": "gpt-9"},
            "Invalid input: model: must be one of: fake",
        ),
    ],
)
async def test_a_bad_call_says_its_first_problem_in_the_message(
    app: ApiClient, fake: FakeBackend, body: dict[str, Any], message: str
) -> None:
    """As a body's validation says it: `Invalid input: <pointer>: <problem>`, not only in the
    details (an agent that reads the message alone must learn what to fix)."""
    response = await app.post(f"{API}/actions", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"] == message
    first = error["details"][0]
    assert message == f"Invalid input: {first['pointer'][1:]}: {first['message']}"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("action", "parameters", "pointer"),
    [
        ("summarize", {"text": " \n\t "}, "/parameters/text"),
        ("generateCode", {"description": "   ", "language": "python"}, "/parameters/description"),
        ("translate", {"text": "hello", "targetLanguage": "\u3000"}, "/parameters/targetLanguage"),
        # Whitespace as the document's ECMA-262 pattern has it, not as Python's \\s does.
        ("sentiment", {"text": "\ufeff"}, "/parameters/text"),
    ],
)
async def test_a_text_of_whitespace_alone_is_a_400(
    app: ApiClient, fake: FakeBackend, action: str, parameters: dict[str, str], pointer: str
) -> None:
    response = await app.post(f"{API}/actions", {"action": action, "parameters": parameters})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == [
        {"pointer": pointer, "message": "must not be empty or only whitespace"}
    ]
    assert fake.requests == []


async def test_what_python_calls_whitespace_and_ecma_does_not_is_text(
    app: ApiClient, fake: FakeBackend
) -> None:
    for text in ("\u001c", "\u0085"):
        answer = await app.post(
            f"{API}/actions", {"action": "summarize", "parameters": {"text": text}}
        )
        assert answer.status_code == 200, answer.text
    blank_user = {"action": "summarize", "parameters": {"text": "t"}, "userId": "   "}
    refused = await app.post(f"{API}/actions", blank_user)
    assert refused.json()["error"]["details"] == [
        {"pointer": "/userId", "message": "must not be empty or only whitespace"}
    ]


async def test_a_whole_number_written_as_a_float_counts_as_an_integer(
    app: ApiClient, fake: FakeBackend
) -> None:
    """JSON Schema's `integer` admits 2.0: the action gets the number it can count with."""
    fake.replies.append("One two three four five.")
    response = await app.post(
        f"{API}/actions",
        {"action": "summarize", "parameters": {"text": "A long text.", "maxWords": 2.0}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "One two…"


async def test_an_action_that_fails_unexpectedly_is_a_500_and_still_logged(
    app: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.append(RuntimeError("a defect with secret internals"))
    response = await app.post(
        f"{API}/actions", {"action": "summarize", "parameters": {"text": "t"}, "userId": "bo"}
    )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text
    [entry] = await _logs(app)
    assert (entry["kind"], entry["userId"], entry["status"], entry["error"]) == (
        "action",
        "bo",
        "error",
        "internal error",
    )


async def test_an_action_whose_backend_fails_is_logged_with_the_backends_message(
    app: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.append(BackendUnavailable("the model is busy", retry_after=3))
    response = await app.post(
        f"{API}/actions", {"action": "summarize", "parameters": {"text": "t"}}
    )
    assert response.status_code == 503
    [entry] = await _logs(app)
    assert (entry["kind"], entry["status"], entry["error"]) == (
        "action",
        "error",
        "the model is busy",
    )


async def test_a_structured_result_is_also_parsed_in_data_and_logged(
    app: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.append("sports")
    params = {"text": "We won the cup.", "labels": ["sports", "politics"]}
    response = await app.post(
        f"{API}/actions", {"action": "classify", "parameters": params, "userId": "ann"}
    )
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "result": "sports",
        "data": "sports",
        "finishReason": "stop",
        "truncated": False,
    }
    [entry] = await _logs(app)
    assert (entry["kind"], entry["action"], entry["userId"], entry["status"]) == (
        "action",
        "classify",
        "ann",
        "ok",
    )
    assert json.loads(entry["message"]) == params
    assert entry["reply"] == "sports"


async def test_output_that_cannot_be_brought_into_form_is_200_with_success_false(
    app: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.extend(["weather", "cooking"])
    response = await app.post(
        f"{API}/actions",
        {"action": "classify", "parameters": {"text": "t", "labels": ["sports", "politics"]}},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False and body["data"] is None
    assert body["result"].startswith("the model's output could not be brought into")
    [entry] = await _logs(app)
    assert (entry["kind"], entry["action"], entry["status"]) == ("action", "classify", "failed")
    assert entry["error"] == body["result"]


async def test_every_call_is_one_interaction_in_the_logs(app: ApiClient, fake: FakeBackend) -> None:
    fake.replies.extend(["An old pond", '{"city": "Paris"}', "positive"])
    calls = [
        ("haiku", {"topic": "frogs"}),
        ("extract", {"text": "I live in Paris.", "fields": {"city": "string"}}),
        ("sentiment", {"text": "Lovely!"}),
    ]
    for action, parameters in calls:
        response = await app.post(f"{API}/actions", {"action": action, "parameters": parameters})
        assert response.json()["success"] is True
    entries = await _logs(app)
    assert [(e["kind"], e["action"]) for e in reversed(entries)] == [
        ("action", name) for name, _ in calls
    ]
    assert [e["reply"] for e in reversed(entries)] == [
        "An old pond",
        '{"city": "Paris"}',
        "positive",
    ]


async def test_the_served_document_describes_every_action(app: ApiClient) -> None:
    document = (await app.get("/openapi.json")).json()
    validate(document)
    schemas = document["components"]["schemas"]
    request = schemas["ActionRequest"]
    assert "haiku" in request["properties"]["action"]["enum"]
    assert (
        request["discriminator"]["mapping"]["haiku"] == "#/components/schemas/ActionRequest_haiku"
    )
    assert schemas["Action_haikuParameters"]["properties"]["topic"]["maxLength"] == 200
    operations = document["paths"][f"{API}/actions"]
    assert operations["get"]["operationId"] == "listActions"
    assert "success false" in operations["post"]["description"]
    assert len(operations["post"]["description"]) <= 300


@pytest.mark.model
@pytest.mark.parametrize(
    ("action", "parameters"),
    [
        ("summarize", {"text": "The council met. It funded a new park. Work starts in May."}),
        ("generateCode", {"description": "add two numbers", "language": "python"}),
        ("explainCode", {"code": "print(sum([1, 2]))"}),
        ("translate", {"text": "Thank you very much.", "targetLanguage": "Spanish"}),
        ("classify", {"text": "The striker scored twice.", "labels": ["sports", "finance"]}),
        ("extract", {"text": "Bob is 40.", "fields": {"name": "string", "age": "integer"}}),
        ("sentiment", {"text": "What a wonderful day!"}),
        ("rewrite", {"text": "gimme the file now", "tone": "polite"}),
        ("answer", {"question": "What color is the sky on a clear day?"}),
        ("haiku", {"topic": "rain"}),
    ],
)
async def test_every_action_through_the_api_with_the_real_model(
    settings: Settings,
    local_backend: LocalBackend,
    write_file: WriteFile,
    action: str,
    parameters: dict[str, Any],
) -> None:
    configured = settings.model_copy(
        update={"actions_file": write_file("actions.yaml", HAIKU_YAML)}
    )
    async with running_app(configured, _KeepLoaded(local_backend)) as api:
        response = await api.post(f"{API}/actions", {"action": action, "parameters": parameters})
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is True, body
        assert isinstance(body["result"], str) and body["result"].strip()
        if action == "extract":
            assert set(body["data"]) == {"name", "age"} and isinstance(body["data"]["age"], int)
        if action in ("classify", "sentiment"):
            assert body["data"] == body["result"]
        [entry] = (await api.get(f"{API}/logs")).json()
        assert (entry["kind"], entry["action"], entry["reply"]) == (
            "action",
            action,
            body["result"],
        )


def many_actions(count: int, length: int) -> str:
    """An actions file of `count` actions whose descriptions are `length` characters long."""
    entries = [
        f"  - name: act{n:02d}\n"
        f"    description: {chr(ord('a') + n % 26) * length}\n"
        "    parameters: {type: object, properties: {topic: {type: string, maxLength: 20}}}\n"
        '    prompt: "About {{ topic }}."\n'
        "    output: text\n"
        for n in range(count)
    ]
    return "actions:\n" + "".join(entries)


async def test_a_long_list_comes_in_pages_within_the_limit(
    settings: Settings, fake: FakeBackend, write_file: WriteFile
) -> None:
    configured = settings.model_copy(
        update={
            "actions_file": write_file("actions.yaml", many_actions(12, 600)),
            "max_response_chars": 2_500,
        }
    )
    async with running_app(configured, fake) as api:
        expected = sorted(d.name for d in api.runtime.registry)
        seen: list[str] = []
        url: str | None = f"{API}/actions"
        while url:
            answer = await api.get(url)
            assert answer.status_code == 200, answer.text
            assert len(answer.text) <= 2_500
            actions = answer.json()["actions"]
            assert actions and all("truncatedFields" not in a for a in actions)
            seen += [a["name"] for a in actions]
            link = answer.headers.get("link")
            url = link.split(";")[0].strip("<>") if link else None
        assert seen == expected  # every action once, in order
        bad = await api.get(f"{API}/actions?cursor=not%20a%20name")
        assert bad.status_code == 400 and bad.json()["error"]["details"][0]["pointer"] == "/cursor"


async def test_a_single_oversized_description_is_shortened_with_a_marker(
    settings: Settings, fake: FakeBackend, write_file: WriteFile
) -> None:
    configured = settings.model_copy(
        update={
            "actions_file": write_file("actions.yaml", many_actions(1, 5_000)),
            "max_response_chars": 2_000,
        }
    )
    async with running_app(configured, fake) as api:
        answer = await api.get(f"{API}/actions")
        assert len(answer.text) <= 2_000
        listed = answer.json()["actions"][0]  # alone on its page; the built-ins follow
        assert listed["name"] == "act00" and listed["truncatedFields"] == ["description"]
        assert listed["description"].startswith("a" * 100)
        assert "[truncated:" in listed["description"]


async def test_unknown_parameters_are_ignored_and_the_answer_says_so(
    app: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.extend(["Cats sleep.", "print('hello world')"])
    summary = await app.post(
        f"{API}/actions",
        {"action": "summarize", "parameters": {"text": "Cats sleep a lot.", "length": "short"}},
    )
    assert summary.status_code == 200, summary.text
    assert summary.json()["warnings"] == [
        "parameters/length is not a parameter of summarize and was ignored"
    ]
    code = await app.post(
        f"{API}/actions",
        {"action": "generateCode", "parameters": {"prompt": "hello world in python"}},
    )
    assert code.status_code == 200, code.text
    assert code.json()["result"] == "print('hello world')"
    assert code.json()["warnings"] == [
        "parameters/prompt is not a parameter of generateCode and was taken as its description",
        "parameters/language was not given: the code is in Python, the language the "
        "description names",
    ]
    shown = fake.requests[-1].messages[-1].content
    assert shown == "Write Python code that does the following: hello world in python."
    # The log keeps the parameters as they were sent.
    entries = await _logs(app)
    assert json.loads(entries[0]["message"]) == {"prompt": "hello world in python"}
    # Nothing to say: no `warnings` at all.
    fake.replies.append("positive")
    plain = await app.post(f"{API}/actions", {"action": "sentiment", "parameters": {"text": "t"}})
    assert "warnings" not in plain.json()
    # Thousands of them: ten named, the rest counted; the result keeps its room in the answer.
    fake.replies.append("A cat sat.")
    many = {"text": "The cat sat.", **{f"k{i}": i for i in range(2000)}}
    crowded = await app.post(f"{API}/actions", {"action": "summarize", "parameters": many})
    assert crowded.status_code == 200, crowded.text
    assert len(crowded.text) < 3000 and crowded.json()["result"] == "A cat sat."
    warnings = crowded.json()["warnings"]
    assert len(warnings) == 11 and warnings[0].startswith("parameters/k0 is not a parameter")
    assert warnings[-1] == "1,990 more parameters that summarize does not take were ignored"


async def test_several_stand_ins_for_the_main_text_are_a_400_naming_them(
    app: ApiClient, fake: FakeBackend
) -> None:
    response = await app.post(
        f"{API}/actions",
        {"action": "summarize", "parameters": {"prompt": "a", "input": "b", "length": 3}},
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [
        {
            "pointer": "/parameters/text",
            "message": "is required (prompt, input were sent, and only one of them could be "
            "taken in its place)",
        }
    ]
    assert fake.requests == []


async def test_max_tokens_caps_every_generation_of_the_action(
    app: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.extend(["Short.", "sports"])
    body = {"action": "summarize", "parameters": {"text": "A long text."}, "maxTokens": 7}
    assert (await app.post(f"{API}/actions", body)).status_code == 200
    labels = {"text": "t", "labels": ["sports", "politics"]}
    classify = {"action": "classify", "parameters": labels, "maxTokens": 500}
    assert (await app.post(f"{API}/actions", classify)).status_code == 200
    # 7 below the action's own 256; 500 above classify's own budget, which stays.
    assert [r.max_tokens for r in fake.requests] == [7, len("politics") + 8]
    too_many = await app.post(f"{API}/actions", {**body, "maxTokens": 10**6})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["details"][0]["pointer"] == "/maxTokens"
    zero = await app.post(f"{API}/actions", {**body, "maxTokens": 0})
    assert zero.status_code == 400


async def test_a_label_is_never_cut_and_truncated_says_when_a_result_is(
    app: ApiClient, fake: FakeBackend
) -> None:
    fake.replies.extend(["sports", "positive", "The fox is happy and it runs far away."])
    labels = {"text": "We won the cup!", "labels": ["sports", "politics"]}
    classify = {"action": "classify", "parameters": labels, "maxTokens": 1}
    sentiment = {"action": "sentiment", "parameters": {"text": "We won!"}, "maxTokens": 1}
    summary = {"action": "summarize", "parameters": {"text": "t", "maxWords": 5}}
    answers = [(await app.post(f"{API}/actions", b)).json() for b in (classify, sentiment, summary)]
    seen = [(a["success"], a["result"], a["finishReason"], a["truncated"]) for a in answers]
    assert seen == [
        (True, "sports", "stop", False),
        (True, "positive", "stop", False),
        (True, "The fox is happy and…", "stop", True),  # cut by the server, not the model
    ]
    assert [r.max_tokens for r in fake.requests] == [len("politics") + 8, 8, 42]


async def test_the_document_describes_warnings_max_tokens_and_open_parameters(
    app: ApiClient,
) -> None:
    document = (await app.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert schemas["ActionResponse"]["properties"]["warnings"]["type"] == "array"
    max_tokens = schemas["ActionRequest"]["properties"]["maxTokens"]
    assert (max_tokens["minimum"], max_tokens["maximum"]) == (1, 1024)
    assert "additionalProperties" not in schemas["Action_summarizeParameters"]
    assert schemas["Action_generateCodeParameters"]["required"] == ["description"]
    listed = {a["name"]: a for a in (await app.get(f"{API}/actions")).json()["actions"]}
    assert all("additionalProperties" not in listed[n]["parameters"] for n in ("extract", "answer"))


@pytest.mark.model
async def test_the_audits_calls_with_the_real_model(
    settings: Settings, local_backend: LocalBackend
) -> None:
    """What a new user with only the seed document sent: every one a 200 now."""
    async with running_app(settings, _KeepLoaded(local_backend)) as api:
        code = await api.post(
            f"{API}/actions",
            {"action": "generateCode", "parameters": {"prompt": "hello world in python"}},
        )
        assert code.status_code == 200 and code.json()["success"] is True, code.text
        assert len(code.json()["warnings"]) == 2
        summary = await api.post(
            f"{API}/actions",
            {
                "action": "summarize",
                "parameters": {"text": "Cats sleep a lot.", "length": "short"},
            },
        )
        assert summary.status_code == 200 and summary.json()["success"] is True
        for labels in (["\u0000"], ["\u0081"], ["a\u0081b"]):
            answer = await api.post(
                f"{API}/actions",
                {"action": "classify", "parameters": {"text": "hi there", "labels": labels}},
            )
            assert answer.status_code == 200, answer.text
            assert (answer.json()["result"], answer.json()["data"]) == (labels[0], labels[0])
            assert labels[0].encode() in answer.content or "\\u0000" in answer.text
        for name, kind in (("a b", "string"), ("x\\y", "number")):
            extracted = await api.post(
                f"{API}/actions",
                {
                    "action": "extract",
                    "parameters": {"text": "Ann Smith is 34.", "fields": {name: kind}},
                },
            )
            assert extracted.json()["success"] is True, extracted.text
            assert list(extracted.json()["data"]) == [name]


@pytest.mark.model
async def test_max_tokens_cuts_an_action_with_the_real_model(
    settings: Settings, local_backend: LocalBackend
) -> None:
    async with running_app(settings, _KeepLoaded(local_backend)) as api:
        body = {"action": "summarize", "parameters": {"text": PARK_TEXT}, "maxTokens": 3}
        answer = await api.post(f"{API}/actions", body)
        assert answer.status_code == 200, answer.text
        cut = answer.json()
        assert cut["success"] is True and cut["result"]
        assert (cut["finishReason"], cut["truncated"]) == ("length", True)
        [entry] = (await api.get(f"{API}/logs")).json()
        assert 0 < entry["completionTokens"] <= 3


PARK_TEXT = (
    "The city council met on Tuesday to discuss the new park. Residents asked for more trees "
    "and a playground. The council agreed to fund both, and construction starts in May."
)
