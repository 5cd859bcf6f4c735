"""No /logs response passes GPTACTIONS_MAX_RESPONSE_CHARS (ChatGPT's 100,000 characters)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from gptactions.config import Settings
from gptactions.llm.fake import FakeBackend
from gptactions.services.sizing import fit, json_length
from tests.conftest import ApiClient, running_app


async def record(api: ApiClient, count: int, length: int) -> set[str]:
    messages = set()
    for n in range(count):
        message = f"{n:04d} " + "x" * (length - 5)
        answer = await api.post("/api/v1/gpt/conversations", {"userId": "u", "message": message})
        assert answer.status_code == 200, answer.text
        messages.add(message[:5])
    return messages


async def test_pages_of_long_rows_stay_under_the_limit_and_skip_nothing(
    settings: Settings, fake: FakeBackend
) -> None:
    roomy = settings.model_copy(update={"max_message_length": 32_000})
    async with running_app(roomy, fake) as api:
        # Each row: a 32,000-character message and its 32,000-character echo.
        expected = await record(api, 5, 32_000)
        seen: list[str] = []
        url: str | None = "/api/v1/gpt/logs?limit=4"
        while url:
            answer = await api.get(url)
            assert answer.status_code == 200
            assert len(answer.text) <= 100_000
            items = answer.json()
            assert items and all("truncatedFields" not in item for item in items)
            seen += [item["message"][:5] for item in items]
            link = answer.headers.get("link")
            url = link.split(";")[0].strip("<>") if link else None
            if url:
                assert parse_qs(urlsplit(url).query)["limit"] == ["4"]
        assert sorted(seen) == sorted(expected) and len(seen) == 5


async def test_a_single_oversized_row_is_shortened_with_a_marker(
    settings: Settings, fake: FakeBackend
) -> None:
    tight = settings.model_copy(update={"max_response_chars": 5_000})
    async with running_app(tight, fake) as api:
        await record(api, 2, 8_000)
        answer = await api.get("/api/v1/gpt/logs")
        assert len(answer.text) <= 5_000
        (item,) = answer.json()
        assert set(item["truncatedFields"]) <= {"message", "reply"} and item["truncatedFields"]
        field = item["truncatedFields"][0]
        assert "[truncated:" in item[field] and "characters omitted]" in item[field]
        assert "link" in answer.headers  # the second row is on the next page


def test_fit_keeps_every_item_that_fits() -> None:
    items = [{"message": "a" * 10, "reply": "b"} for _ in range(3)]
    kept, cut_short = fit(items, 10_000)
    assert kept == items and not cut_short
    kept, cut_short = fit(items, json_length(items[:2]))
    assert kept == items[:2] and cut_short
