"""What a server says about its settings as it starts: variables that name no setting, and
settings that are unsafe in production. Warnings, not refusals: each is a choice an operator
may have made on purpose, but a typo'd `GPTACTIONS_LOG_RETENTON` would otherwise keep every
interaction forever without a word."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from gptactions.config import Settings

PREFIX = "GPTACTIONS_"

OTHER_VARIABLES = frozenset({"GPTACTIONS_CONFIG"})
"""Variables read outside the Settings object (none today but the reserved name)."""


def setting_names() -> frozenset[str]:
    """Every variable that names a setting."""
    return frozenset(PREFIX + name.upper() for name in Settings.model_fields) | OTHER_VARIABLES


def unknown_variables(environ: Mapping[str, str], dotenv: Path | None = None) -> list[str]:
    """A message for each `GPTACTIONS_*` variable of the environment or the `.env` file that
    names no setting, with the setting it most likely meant."""
    names = setting_names()
    found = {name: "the environment" for name in environ if name.upper().startswith(PREFIX)}
    if dotenv is not None and dotenv.is_file():
        for name in _dotenv_names(dotenv):
            if name.upper().startswith(PREFIX):
                found.setdefault(name, str(dotenv))
    messages = []
    for name, where in sorted(found.items()):
        if name.upper() in names:
            continue
        close = difflib.get_close_matches(name.upper(), names, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        messages.append(f"{name} in {where} is not a setting and is ignored{hint}")
    return messages


def _dotenv_names(path: Path) -> list[str]:
    """The names a `.env` file sets (pydantic-settings reads it with python-dotenv)."""
    from dotenv import dotenv_values

    try:
        return [name for name in dotenv_values(path) if name]
    except (OSError, UnicodeDecodeError):
        return []


_EVERYWHERE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def unsafe_in_production(settings: Settings) -> list[str]:
    """A message for each setting a production server should not run with."""
    if settings.environment != "production":
        return []
    messages = []
    if settings.metrics_token is None:
        messages.append(
            "GPTACTIONS_METRICS_TOKEN is unset: GET /metrics is open to anyone who reaches the "
            "server (set a token, or keep /metrics off the proxy)"
        )
    if "*" in settings.cors_origins:
        messages.append("GPTACTIONS_CORS_ORIGINS=*: any web page may call the API from a browser")
    if any(network in _EVERYWHERE for network in settings.trusted_proxies):
        messages.append(
            "GPTACTIONS_TRUSTED_PROXIES trusts every address: any client can claim any IP "
            "(rate limits, logs) by sending X-Forwarded-For"
        )
    public = urlsplit(settings.public_url or "")
    if public.scheme == "http" and public.hostname not in ("localhost", "127.0.0.1", "::1"):
        messages.append(
            "GPTACTIONS_PUBLIC_URL is http: keys and OAuth tokens would cross the network in "
            "clear (ChatGPT only calls https)"
        )
    if settings.database_url.startswith("sqlite") and settings.sqlite_synchronous == "off":
        messages.append(
            "GPTACTIONS_SQLITE_SYNCHRONOUS=off: an acknowledged interaction can be lost in a crash"
        )
    return messages


def inline_comments(settings: Settings) -> list[str]:
    """A message for each secret that may hold spaces (a key chosen by a person, an OAuth client
    secret) and holds ` #`: an env file's inline comment, most likely, which systemd's
    EnvironmentFile keeps in the value. (A token that never holds whitespace is refused instead:
    `config.token_setting`.)"""
    secrets = (
        ("GPTACTIONS_API_KEY", settings.api_key),
        ("GPTACTIONS_OIDC_CLIENT_SECRET", settings.oidc_client_secret),
    )
    return [
        f"{name} holds ' #': if that begins an inline comment of an env file (systemd's "
        "EnvironmentFile and docker's --env-file keep it in the value), the comment is part of "
        "the secret; put it on a line of its own"
        for name, secret in secrets
        if secret is not None and re.search(r"\s#", secret.get_secret_value())
    ]


def settings_warnings(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Everything worth saying about the settings as the server starts."""
    environ = os.environ if environ is None else environ
    return [
        *unknown_variables(environ, Path(".env")),
        *unsafe_in_production(settings),
        *inline_comments(settings),
    ]
