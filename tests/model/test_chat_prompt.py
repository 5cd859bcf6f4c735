"""The chat prompt of a list of messages, built from the model's own template."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gptactions.llm.base import ChatMessage
from gptactions.llm.llama_model import LlamaModel
from gptactions.llm.local import bundled_model_path


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    loaded = LlamaModel(bundled_model_path())
    yield loaded
    loaded.close()


def test_each_message_is_in_the_prompt_once_in_order(model: LlamaModel) -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "first"),
        ChatMessage("assistant", "second"),
        ChatMessage("user", "third"),
    ]
    text = model.detokenize(model.prompt_tokens(messages)).decode()
    assert [text.count(m.content) for m in messages] == [1, 1, 1, 1]
    assert text.index("first") < text.index("second") < text.index("third")
    assert text.endswith("assistant\n")  # ready for the reply


def test_a_prompt_of_many_messages_holds_each_of_them(model: LlamaModel) -> None:
    """2,000 one-word messages: the prompt was built by looking for every message's marker at
    each step, 70 s of CPU for this list (a 68 KB body to /v1/chat/completions); one pass now."""
    message = ChatMessage("user", "x")
    one = len(model.prompt_tokens([message]))
    each = len(model.prompt_tokens([message] * 2)) - one
    assert each > 0
    assert len(model.prompt_tokens([message] * 2000)) == one + 1999 * each
