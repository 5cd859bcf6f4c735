"""One Settings object: `GPTACTIONS_*` variables and a `.env` file; zero config works."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./gptactions.db"
MIN_KEY_LENGTH = 20
"""The shortest API key accepted, a generated or an imported one."""


_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate:
    """At most `limit` requests (or tokens) per `period` seconds.

    `GPTACTIONS_RATE_LIMIT`, `GPTACTIONS_TOKEN_LIMIT`, and a key's own `--rate-limit` and
    `--token-limit`.
    """

    limit: int
    period: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`60/minute`, `5/second`, `1000/hour`, `10000/day`."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*", text)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"not a rate: {text!r}; write e.g. 60/minute")
        return cls(int(match.group(1)), _PERIODS[match.group(2)])

    def __str__(self) -> str:
        """The rate as it is written: `20000/minute`."""
        names = {seconds: name for name, seconds in _PERIODS.items()}
        return f"{self.limit}/{names.get(self.period, f'{self.period}s')}"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


MAX_DURATION_DAYS = 36_500
"""The longest duration written anywhere (a retention, a grace period, a window): 100 years,
which every date it is added to or taken from stays within."""


def parse_duration(text: str) -> int:
    """Seconds in `30d`, `12h`, `90m` or `45s`: at least 1 second, at most 100 years."""
    match = re.fullmatch(r"\s*(\d{1,20})\s*([smhd])\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r}; write e.g. 30d, 12h, 90m")
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 1:
        raise ValueError(f"{text.strip()!r} is not a duration: it must be at least 1s")
    if seconds > MAX_DURATION_DAYS * 86400:
        raise ValueError(f"{text.strip()!r} is too long: at most {MAX_DURATION_DAYS}d (100 years)")
    return seconds


SPACES_IN_A_WORD = (
    "holds whitespace, which a token never does: an inline comment in an env file? systemd's "
    "EnvironmentFile and docker's --env-file keep `NAME=value  # comment` whole as the value; "
    "put the comment on a line of its own"
)


def token_setting(value: object) -> object:
    """A token or key sent or checked as `Authorization: Bearer <token>`, which holds no
    whitespace: leading and trailing whitespace is dropped (never part of a header's value),
    empty is none, and whitespace within is a settings error (SPACES_IN_A_WORD), never
    the value itself."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(text, str):
        return value
    text = text.strip()
    if not text:
        return None
    if any(character.isspace() for character in text):
        raise ValueError(SPACES_IN_A_WORD)
    return text


class BackendConfig(BaseModel):
    """One named backend of `GPTACTIONS_BACKENDS` or the backends file (camelCase keys)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    kind: Literal["openai", "local"] = "openai"
    url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    timeout: float = Field(default=35.0, gt=0)  # below ChatGPT's 45 s per call
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    max_concurrency: int = Field(default=8, ge=1)
    queue_timeout: float = Field(default=5.0, ge=0)
    context_window: int | None = Field(default=None, ge=256)
    model_path: Path | None = None

    @field_validator("api_key", mode="before")
    @classmethod
    def _check_api_key(cls, value: object) -> object:
        return token_setting(value)


_INVALID_SETTINGS = "invalid settings (environment or .env):"


def describe_invalid_settings(error: ValidationError) -> str:
    """What is wrong with the settings, a line per variable; never their values (keys, URLs)."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        message = problem["msg"].removeprefix("Value error, ")
        if not problem["loc"]:  # a check of several settings: its message names them
            lines.append(f"  {message}")
            continue
        field, *path = problem["loc"]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
        lines.append(f"  GPTACTIONS_{str(field).upper()}{where}: {message}")
    return "\n".join([_INVALID_SETTINGS, *lines])


def describe_unreadable_settings(error: Exception) -> str:
    """What pydantic-settings could not even parse (a JSON variable that is not JSON), by name;
    never the value."""
    found = re.search(r'field "([^"]+)"', str(error))
    name = f"GPTACTIONS_{found.group(1).upper()}" if found else "a GPTACTIONS_* variable"
    return "\n".join([_INVALID_SETTINGS, f"  {name}: not valid JSON"])


class Settings(BaseSettings):
    """Every setting of the server. Each one is documented in the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="GPTACTIONS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Serving
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    public_url: str | None = Field(
        default=None,
        description="URL clients use to reach this server; first entry of the document's servers.",
    )
    servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra server URLs for the OpenAPI document (JSON list or comma separated).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose web pages may call the API from a "
        "browser (CORS), comma separated, or * for any; none when unset.",
    )
    trusted_proxies: Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode] = (
        Field(
            default_factory=list,
            description="Proxies (IPs or CIDRs) whose Forwarded / X-Forwarded-* headers are "
            "believed; none when unset.",
        )
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(
        default=True, description="One line per request on standard output, when it ends."
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request line and headers (431 above)."
    )
    header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client has to send a request's headers (408)."
    )
    keepalive_timeout: float = Field(
        default=5.0, gt=0, description="Seconds an idle keep-alive connection stays open."
    )
    max_connections: int | None = Field(
        default=None, ge=1, description="Connections per process; the oldest idle ones close first."
    )
    shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        description="Seconds in-flight requests may finish after SIGTERM before they are ended.",
    )
    environment: Literal["development", "production"] = "development"

    # Storage
    database_url: str = DEFAULT_DATABASE_URL
    auto_migrate: bool = True
    log_retention: str | None = Field(
        default=None, description="Delete interactions older than this (30d, 12h); unset keeps all."
    )
    sqlite_busy_timeout: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds a SQLite statement waits for another's lock before a 503.",
    )
    database_pool_size: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Pooled connections per process: 4 on SQLite (beside its one writer), "
        "10 on PostgreSQL when unset.",
    )
    database_max_overflow: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="PostgreSQL: connections opened past the pool under load, closed after use.",
    )
    sqlite_synchronous: Literal["extra", "full", "normal", "off"] = Field(
        default="full",
        description="SQLite's durability: full survives a power cut; normal only a crash.",
    )
    sqlite_writer: Literal["process", "thread"] = Field(
        default="process",
        description="Where SQLite's group writer runs: a small process of its own per server "
        "process (faster: no GIL shared with requests), or a thread.",
    )

    # The embedded model
    model_path: Path | None = None
    context_window: int = Field(default=2048, ge=256, le=131072)
    model_threads: int | None = Field(
        default=None, ge=1, description="CPU threads; the cores the process may use when unset."
    )
    model_parallel: int = Field(
        default=8, ge=1, le=256, description="Requests the embedded model generates at once."
    )
    model_queue: int = Field(
        default=32, ge=1, description="Requests that may wait for a free sequence of the model."
    )
    repeat_penalty: float = Field(
        default=1.1, ge=1.0, le=2.0, description="Repetition penalty over the last 64 tokens."
    )

    # Keys
    api_key: SecretStr | None = Field(
        default=None, description="Admin key to create at start-up instead of a random one."
    )

    # OAuth (docs/gpt-actions.md)
    # At most a year and 100 years: a token's expiry is a date, which a longer one overflowed
    # (every token exchange a 500).
    oauth_access_token_lifetime: int = Field(
        default=3600, ge=60, le=366 * 86400, description="Seconds an OAuth access token is valid."
    )
    oauth_refresh_token_lifetime: int = Field(
        default=30 * 86400,
        ge=3600,
        le=MAX_DURATION_DAYS * 86400,
        description="Seconds an OAuth refresh token is valid.",
    )
    oauth_dynamic_registration: bool = Field(
        default=False,
        description="Let OAuth clients register themselves (RFC 7591, POST /oauth/register): "
        "public clients only, named '(self-registered)' on the consent page.",
    )
    privacy_contact: str | None = Field(
        default=None, description="Who users write to about their data; shown on /privacy."
    )
    login_rate_limit: str | None = Field(
        default="10/minute",
        description="Sign-in attempts per client address, and failed ones per username from "
        "one address; failed ones per username from every address: ten times it.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect provider users sign in with, e.g. https://accounts.google.com.",
    )
    oidc_client_id: str | None = Field(
        default=None, description="This server's id at the provider."
    )
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="This server's secret at the provider (none for a public client)."
    )
    oidc_scopes: str = Field(
        default="openid email profile", description="Scopes asked of the provider (with openid)."
    )
    oidc_allowed_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Email domains allowed to sign in through the provider; any when empty.",
    )
    oidc_username_claim: str = Field(
        default="email",
        description="ID token claim that names a new user (email, preferred_username).",
    )
    oidc_name: str | None = Field(
        default=None, description='Provider name on the "Sign in with" button; the issuer\'s host.'
    )

    # Limits
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_user_id_length: int = Field(default=256, ge=1)
    max_message_length: int = Field(default=32_000, ge=1)
    max_tokens_limit: int = Field(
        default=1024, ge=1, description="Largest maxTokens a call may ask."
    )
    default_max_tokens: int = Field(default=256, ge=1)
    max_response_chars: int = Field(
        default=100_000,
        ge=1000,
        description="Longest /api/v1/gpt JSON response, in characters (ChatGPT's is 100,000).",
    )
    request_deadline: float = Field(
        default=40.0,
        gt=0,
        le=3600,
        description="Seconds an /api/v1/gpt request may take from arrival to answer (ChatGPT: 45).",
    )
    logs_max_limit: int = Field(default=1000, ge=1)

    system_prompt: str = "You are a helpful assistant. Answer clearly and concisely."

    # Rate limits per API key
    rate_limit: str | None = Field(
        default=None, description="Requests per key, e.g. 60/minute; none when unset."
    )
    token_limit: str | None = Field(
        default=None,
        description="Tokens (prompt + completion) per key, e.g. 1000000/day; none when unset.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for rate and token limits shared by replicas, e.g. redis://host:6379/0",
    )
    actions_file: Path | None = Field(default=None, description="YAML or TOML file of actions.")
    template_timeout: float = Field(
        default=2.0, gt=0, le=600, description="Seconds a user-defined prompt may take to render."
    )
    template_max_output: int = Field(
        default=100_000, ge=100, description="Characters a rendered prompt may have."
    )

    # Observability
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token GET /metrics asks for; open when unset."
    )

    # Upstream models (docs/upstreams.md)
    upstream_url: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible API, e.g. http://host:8000/v1."
    )
    upstream_api_key: SecretStr | None = None
    upstream_model: str | None = None
    upstream_timeout: float = Field(
        default=35.0, gt=0, description="Total seconds per reply (below ChatGPT's 45 s)."
    )
    upstream_context_window: int = Field(default=8192, ge=256)
    upstream_max_concurrency: int = Field(default=8, ge=1)
    fallback: Literal["local", "none"] = "local"
    backends: list[BackendConfig] = Field(default_factory=list)
    backends_file: Path | None = None
    default_backend: str | None = None
    fallbacks: Annotated[list[str] | None, NoDecode] = None

    @field_validator("rate_limit", "login_rate_limit", "token_limit")
    @classmethod
    def _check_rate(cls, value: str | None) -> str | None:
        if value:
            Rate.parse(value)
        return value or None

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        """Said here, by name, rather than as a traceback when the key is imported; empty
        (`GPTACTIONS_API_KEY=` in a compose file, say) is no key."""
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"an API key must be at least {MIN_KEY_LENGTH} characters long")
        return value

    @field_validator("metrics_token", "upstream_api_key", mode="before")
    @classmethod
    def _check_token(cls, value: object) -> object:
        return token_setting(value)

    @field_validator("database_url", mode="before")
    @classmethod
    def _check_database_url(cls, value: object) -> object:
        """Empty (`GPTACTIONS_DATABASE_URL=` in a compose file, say) is the default; a URL
        that is none is a settings error here, not a traceback when the database opens."""
        if not isinstance(value, str):
            return value
        url = value.strip()
        if not url:
            return DEFAULT_DATABASE_URL
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "not a database URL: use sqlite:///path/to/file.db or "
                "postgresql://user:password@host/database"
            ) from None
        if backend not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"{backend} is not supported: use sqlite or postgresql")
        if backend != "sqlite":
            unknown = sorted(set(make_url(url).query) - set(POSTGRES_URL_OPTIONS))
            if unknown:
                raise ValueError(
                    f"{', '.join(unknown)}: not an option of this server's PostgreSQL driver "
                    f"(asyncpg); it takes {', '.join(POSTGRES_URL_OPTIONS)}"
                )
        return url

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        """An http(s) URL with a host and no query: the document's first server, OAuth's base."""
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host, e.g. https://gpt.example.com")
        if parts.query or parts.fragment:
            raise ValueError("a base URL takes no ?query or #fragment")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        """A URL redis-py opens: said here rather than as its traceback at start-up."""
        if not value:
            return None
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("not a Redis URL: use redis://host:6379/0, rediss:// or unix://")
        return value

    @field_validator("sqlite_synchronous", "sqlite_writer", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_retention")
    @classmethod
    def _check_retention(cls, value: str | None) -> str | None:
        if value:
            parse_duration(value)
        return value or None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        """`*`, or origins as a browser sends them: scheme, host and port, no path."""
        items = _split(value)
        if isinstance(items, list):
            for item in items:
                origin = str(item)
                parts = urlsplit(origin)
                if origin != "*" and (
                    parts.scheme not in ("http", "https")
                    or not parts.netloc
                    or origin.rstrip("/") != f"{parts.scheme}://{parts.netloc}"
                ):
                    raise ValueError(
                        f"{origin!r} is not an origin: write scheme://host[:port], e.g. "
                        "https://app.example.com, or *"
                    )
            return [str(item).rstrip("/") for item in items]
        return items

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        """IPs and CIDRs: a JSON list, or comma separated; a bare IP is a network of one."""
        items = _split(value)
        if isinstance(items, list):
            return [ipaddress.ip_network(str(item).strip(), strict=False) for item in items]
        return items

    @field_validator("oidc_issuer")
    @classmethod
    def _check_issuer(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            local = parts.hostname in ("localhost", "127.0.0.1", "::1")
            if not parts.netloc or not (
                parts.scheme == "https" or (parts.scheme == "http" and local)
            ):
                raise ValueError(
                    f"the OIDC issuer must be an https URL (http only to localhost): {value!r}"
                )
        return value.rstrip("/") if value else None

    @field_validator("oidc_scopes")
    @classmethod
    def _check_oidc_scopes(cls, value: str) -> str:
        if "openid" not in value.split():
            raise ValueError("GPTACTIONS_OIDC_SCOPES must include openid")
        return " ".join(value.split())

    @model_validator(mode="after")
    def _check_default_max_tokens(self) -> Settings:
        """A default above the limit would be a default no call may ask for (and a document
        whose `maxTokens` says `maximum: 1024`, "default 5000"): refused when set so, lowered to
        the limit when only the limit was set below it."""
        if self.default_max_tokens <= self.max_tokens_limit:
            return self
        if "default_max_tokens" in self.model_fields_set:
            raise ValueError(
                f"GPTACTIONS_DEFAULT_MAX_TOKENS ({self.default_max_tokens}) is above "
                f"GPTACTIONS_MAX_TOKENS_LIMIT ({self.max_tokens_limit}): lower it, or raise "
                "the limit"
            )
        self.default_max_tokens = self.max_tokens_limit
        return self

    @model_validator(mode="after")
    def _check_oidc(self) -> Settings:
        if self.oidc_issuer and not self.oidc_client_id:
            raise ValueError("GPTACTIONS_OIDC_ISSUER needs GPTACTIONS_OIDC_CLIENT_ID")
        self.oidc_allowed_domains = [d.lower().lstrip("@") for d in self.oidc_allowed_domains]
        return self

    @field_validator("servers", "fallbacks", "oidc_allowed_domains", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        return _split(value)


def _split(value: object) -> object:
    """A list from the environment: a JSON list, or comma separated."""
    if isinstance(value, str):
        if value.strip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


POSTGRES_TLS_FILES = ("sslrootcert", "sslcert", "sslkey")
"""libpq's TLS files, which asyncpg takes only inside an SSL context (`store/db.tls_options`)."""
POSTGRES_URL_OPTIONS = (
    *("sslmode", "ssl", *POSTGRES_TLS_FILES, "host", "port", "target_session_attrs", "passfile"),
)
"""The query options a PostgreSQL URL may carry: those asyncpg takes, and libpq's `sslmode`,
which it takes as `ssl` (the same values: disable, prefer, require, verify-ca, verify-full), and
TLS files. Another (libpq's `connect_timeout`, say) was a TypeError from deep in the driver."""


def to_async_url(url: str) -> str:
    """Map `sqlite:///x` and `postgresql://...` to their asyncio drivers (libpq's `sslmode`
    to asyncpg's `ssl`)."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
        ("postgresql+psycopg2://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            url = driver + url[len(plain) :]
            break
    if url.startswith("postgresql+asyncpg://") and "sslmode=" in url:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        query = dict(parsed.query)
        query.setdefault("ssl", query.pop("sslmode"))
        query.pop("sslmode", None)
        url = parsed.set(query=query).render_as_string(hide_password=False)
    return url
