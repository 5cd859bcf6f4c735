"""Builds the configured backends and the router over them from the settings.

The rules, documented in docs/upstreams.md:

- With no backend configured, the embedded model (`local`) answers everything.
- `GPTACTIONS_UPSTREAM_URL` adds an OpenAI-compatible backend named `upstream`, which becomes the
  default.
- `GPTACTIONS_BACKENDS` (a JSON list) and `GPTACTIONS_BACKENDS_FILE` (the same list in YAML) add
  named backends; the first one listed is the default unless `GPTACTIONS_DEFAULT_BACKEND` says.
- The embedded model is the fallback of the others unless `GPTACTIONS_FALLBACK=none`;
  `GPTACTIONS_FALLBACKS` gives an explicit ordered list instead.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import TypeAdapter, ValidationError

from gptactions.config import BackendConfig, Settings
from gptactions.llm.base import Backend
from gptactions.llm.local import LocalBackend
from gptactions.llm.openai import OpenAIBackend
from gptactions.llm.redact import safe_url
from gptactions.llm.router import BackendRouter

LOCAL_NAME = "local"
UPSTREAM_NAME = "upstream"


class BackendConfigError(ValueError):
    """The backends' configuration is inconsistent; the message says what to fix."""


def build_router(settings: Settings) -> BackendRouter:
    """The router over every configured backend, with its default and fallbacks."""
    configs = backend_configs(settings)
    backends = [build_backend(config, settings) for config in configs]
    names = [backend.name for backend in backends]
    default = settings.default_backend or names[0]
    if default not in names:
        raise BackendConfigError(
            f"GPTACTIONS_DEFAULT_BACKEND={default!r} names no configured backend "
            f"(configured: {', '.join(names)})"
        )
    if settings.fallbacks is not None:
        fallbacks = list(settings.fallbacks)
        unknown = [name for name in fallbacks if name not in names]
        if unknown:
            raise BackendConfigError(
                f"GPTACTIONS_FALLBACKS names {unknown[0]!r}, which is not configured "
                f"(configured: {', '.join(names)})"
            )
    elif settings.fallback == "none":
        fallbacks = []
    else:
        fallbacks = [c.name for c in configs if c.kind == "local" and c.name != default]
    return BackendRouter(backends, default=default, fallbacks=fallbacks)


def check_model_files(settings: Settings, configs: list[BackendConfig]) -> None:
    """Each local backend's model file is there (BackendConfigError otherwise): said before the
    server starts, in one line, rather than as a traceback from each worker's start-up."""
    from gptactions.llm.local import bundled_model_path

    for config in configs:
        if config.kind != "local":
            continue
        try:
            path = config.model_path or settings.model_path or bundled_model_path()
        except FileNotFoundError as error:
            raise BackendConfigError(str(error)) from None
        if not path.is_file():
            source = "its model_path" if config.model_path else "GPTACTIONS_MODEL_PATH"
            raise BackendConfigError(
                f"the model file of backend {config.name!r} is not there: {path} ({source})"
            )


def backend_configs(settings: Settings) -> list[BackendConfig]:
    """Every backend the settings describe, in order, the implicit embedded model included."""
    configs = [*load_backends_file(settings.backends_file), *settings.backends]
    if settings.upstream_url:
        configs.insert(
            0,
            BackendConfig(
                name=UPSTREAM_NAME,
                kind="openai",
                url=settings.upstream_url,
                api_key=settings.upstream_api_key,
                model=settings.upstream_model,
                timeout=settings.upstream_timeout,
                read_timeout=min(60.0, settings.upstream_timeout),
                max_concurrency=settings.upstream_max_concurrency,
                context_window=settings.upstream_context_window,
            ),
        )
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise BackendConfigError(f"two backends are named {config.name!r}")
        seen.add(config.name)
        if config.kind == "openai" and not config.url:
            raise BackendConfigError(f"backend {config.name!r} of kind openai needs a url")
        if config.url and _has_userinfo(config.url):
            raise BackendConfigError(_userinfo_problem(config))
    has_local = any(config.kind == "local" for config in configs)
    wants_local = not configs or (settings.fallback != "none" and settings.fallbacks is None)
    if not has_local and LOCAL_NAME not in seen and (wants_local or _named_local(settings)):
        configs.append(BackendConfig(name=LOCAL_NAME, kind="local"))
    return configs


def _has_userinfo(url: str) -> bool:
    """Whether a URL carries a user name or password (`https://user:key@host/v1`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "@" in url
    return parts.username is not None or parts.password is not None


def _userinfo_problem(config: BackendConfig) -> str:
    """Why a URL with credentials is refused, naming the setting, never the credentials."""
    if config.name == UPSTREAM_NAME:
        setting, key = "GPTACTIONS_UPSTREAM_URL", "GPTACTIONS_UPSTREAM_API_KEY"
    else:
        setting, key = f"the url of backend {config.name!r}", "its apiKey"
    return (
        f"{setting} ({safe_url(config.url or '')}) holds credentials before its '@': they would "
        f"be sent as HTTP Basic authentication and shown wherever the URL is; remove them from "
        f"the URL and put the API key in {key}"
    )


def _named_local(settings: Settings) -> bool:
    """Whether the default or the fallbacks name the implicit embedded model."""
    return settings.default_backend == LOCAL_NAME or LOCAL_NAME in (settings.fallbacks or [])


def load_backends_file(path: Path | None) -> list[BackendConfig]:
    """The backends listed in a YAML file: a list, or a mapping with a `backends` list."""
    if path is None:
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BackendConfigError(f"cannot read the backends file {path}: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("backends")
    try:
        return TypeAdapter(list[BackendConfig]).validate_python(data or [])
    except ValidationError as exc:
        raise BackendConfigError(f"the backends file {path} is invalid: {exc}") from exc


def build_backend(config: BackendConfig, settings: Settings) -> Backend:
    """One backend from its configuration."""
    if config.kind == "local":
        return LocalBackend(
            name=config.name,
            model_path=config.model_path or settings.model_path,
            context_window=config.context_window or settings.context_window,
            threads=settings.model_threads,
            max_queue=settings.model_queue,
            parallel=settings.model_parallel,
            repeat_penalty=settings.repeat_penalty,
        )
    assert config.url is not None  # checked in backend_configs
    return OpenAIBackend(
        name=config.name,
        base_url=config.url,
        model=config.model,
        api_key=config.api_key,
        context_window=config.context_window or 8192,
        connect_timeout=config.connect_timeout,
        read_timeout=min(config.read_timeout, config.timeout),
        total_timeout=config.timeout,
        max_retries=config.max_retries,
        max_concurrency=config.max_concurrency,
        queue_timeout=config.queue_timeout,
    )
