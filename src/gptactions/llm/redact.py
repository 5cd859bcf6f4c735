"""Keeping upstream credentials out of logs, error messages and status."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import SecretStr


def secrets_of(api_key: SecretStr | None, url: str) -> frozenset[str]:
    """The strings to keep out of logs and errors: the key, and any credentials in the URL."""
    secrets = {api_key.get_secret_value()} if api_key is not None else set()
    parts = urlsplit(url)
    if parts.password:
        secrets.add(parts.password)
    for _name, value in parse_qsl(parts.query):
        if len(value) >= 8:  # a key passed as a query parameter, as Azure's `api-key` may be
            secrets.add(value)
    return frozenset(secret for secret in secrets if secret)


def redact(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret replaced by `***`."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def safe_url(url: str) -> str:
    """The URL without credentials or query string, fit for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
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
