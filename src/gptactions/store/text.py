"""Text a database refuses, in what no caller typed: a backend's reply (or an error text) may
hold NUL, which PostgreSQL's text cannot hold, or a lone UTF-16 surrogate, which UTF-8 cannot
encode (neither SQLite nor PostgreSQL stores it). Such characters are stored as U+FFFD, so that
one odd character in a reply never fails its commit, nor the other requests of its batch.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def has_unpaired_surrogate(text: str) -> bool:
    """Whether the text holds a lone surrogate: UTF-8 cannot encode it, so no database stores it
    and no answer can carry it (JSON's `"\\ud800"` escape makes one)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def storable(text: str) -> str:
    """`text` with each NUL and lone surrogate replaced by U+FFFD (itself when it has none)."""
    if "\x00" not in text and not has_unpaired_surrogate(text):
        return text
    return _UNSTORABLE.sub("\ufffd", text)
