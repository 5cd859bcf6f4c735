"""Keeping upstream credentials out of logs, error messages and status."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

# Shorter strings are too likely to occur by chance to be scrubbed wherever they appear.
_MIN_SECRET = 8


def secrets_of(api_key: SecretStr | None, url: str) -> frozenset[str]:
    """The strings to keep out of logs and errors: the key and any credentials in the URL, each
    in every form it may take there (see `secret_forms`)."""
    secrets = {api_key.get_secret_value()} if api_key is not None else set()
    parts = urlsplit(url)
    if parts.password:
        secrets.add(parts.password)
    if parts.username and len(parts.username) >= _MIN_SECRET:  # `https://sk-...@host`
        secrets.add(parts.username)
    for _name, value in parse_qsl(parts.query):
        if len(value) >= _MIN_SECRET:  # a key passed as a query parameter, as Azure's `api-key`
            secrets.add(value)
    return frozenset(form for secret in secrets if secret for form in secret_forms(secret))


def secret_forms(secret: str) -> set[str]:
    """The ways a secret may show in text: as it is, URL-encoded, and base64-encoded.

    Base64 covers the secret encoded alone and inside a longer encoded string (an HTTP Basic
    `user:key` credential, say): at each of the three alignments a secret can have there, the
    characters that depend on its bytes alone are the same whatever surrounds it.
    """
    forms = {secret}
    for encoded in (quote(secret, safe=""), quote_plus(secret, safe="")):
        forms.add(encoded)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda hexes: hexes.group().lower(), encoded))
    raw = secret.encode("utf-8")
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        alone = encode(raw).decode("ascii")
        forms.update((alone, alone.rstrip("=")))
        for offset in range(3):
            encoded = encode(b"\0" * offset + raw).decode("ascii")
            whole_groups = (offset + len(raw)) // 3
            core = encoded[4 if offset else 0 : whole_groups * 4]
            if len(core) >= _MIN_SECRET:
                forms.add(core)
    return {form for form in forms if len(form) >= min(len(secret), _MIN_SECRET)}


def redact(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret replaced by `***` (the longest first, so none is left half)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def safe_url(url: str) -> str:
    """The URL without credentials or query string, fit for logs and errors."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # an invalid host or port: nothing of it is shown
        return "(an invalid URL)"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class LogRedactor(logging.Filter):
    """Scrubs secrets from the records of a logger, from `install()` until `remove()`.

    httpx logs each request's full URL at INFO, and a URL may carry credentials. Each runtime
    installs its own, with its backends' secrets, and removes it when it closes.
    """

    def __init__(self, secrets: Iterable[str], logger: str = "httpx") -> None:
        super().__init__()
        self.secrets = frozenset(secrets)
        self._logger = logging.getLogger(logger)

    def install(self) -> None:
        """Start scrubbing the logger's records."""
        self._logger.addFilter(self)

    def remove(self) -> None:
        """Stop scrubbing the logger's records."""
        self._logger.removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message when it holds a secret; never drop the record."""
        if self.secrets:
            message = record.getMessage()
            scrubbed = redact(message, self.secrets)
            if scrubbed != message:
                record.msg, record.args = scrubbed, ()
        return True


SENSITIVE_QUERY = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "client_secret",
        "code",
        "code_verifier",
        "key",
        "password",
        "q",
        "refresh_token",
        "state",
        "token",
    }
)
"""Query parameters whose values are kept out of spans and the access log: OAuth's codes and
tokens (a sign-in provider's callback carries them), an API key a client put in the URL (it is
refused there, but its request is logged), and `/logs?q=`, which quotes what users wrote."""

REDACTED = "REDACTED"


def redacted_query(url: str) -> str:
    """`url` (or a bare query string) with the values of `SENSITIVE_QUERY`'s parameters
    replaced by `REDACTED`; the same string when it holds none."""
    base, mark, query = url.rpartition("?")
    if not mark:
        base, query = "", url
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name in SENSITIVE_QUERY for name, _ in pairs):
        return url
    kept = [(name, REDACTED if name in SENSITIVE_QUERY else value) for name, value in pairs]
    return f"{base}{mark}{urlencode(kept)}"
