"""The server's resources and services, built from one Settings object and opened once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from gptactions.config import Rate, Settings, parse_duration
from gptactions.llm.factory import build_router
from gptactions.llm.redact import LogRedactor, safe_url
from gptactions.llm.router import BackendRouter
from gptactions.metrics import Metrics
from gptactions.services.actions import ActionRegistry, ActionService, build_registry
from gptactions.services.completions import CompletionService
from gptactions.services.conversations import ConversationService
from gptactions.services.interactions import InteractionLog
from gptactions.services.keys import KeyService, NewKey, NoKeys, admins_of_one_tenant
from gptactions.services.limits import RateLimiter, TokenQuota, build_counter, build_limiter
from gptactions.services.oauth import OAuthService
from gptactions.services.oidc import OidcConfig, OidcService
from gptactions.services.personal import PersonalData
from gptactions.services.retention import Retention
from gptactions.services.status import StatusService
from gptactions.services.templates import RenderLimits, TemplateRenderer
from gptactions.services.usage import UsageService
from gptactions.services.users import UserService
from gptactions.store import outage, schema
from gptactions.store.db import Database
from gptactions.store.outage import DatabaseUnavailable

log = logging.getLogger(__name__)

# Seconds between two attempts to prepare a database that was down at start-up.
PREPARE_RETRY_EVERY = 2.0


class Stopping(asyncio.Event):
    """Set when the server stops (at the end of the shutdown grace); also calls back those
    registered, so each running request can be cut short without a task of its own waiting."""

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: set[Callable[[], object]] = set()

    def set(self) -> None:
        """Set the event and call every registered callback."""
        super().set()
        for callback in list(self._callbacks):
            callback()

    def on_set(self, callback: Callable[[], object]) -> None:
        """Call `callback` when the event is set (at once when it is already)."""
        if self.is_set():
            callback()
        else:
            self._callbacks.add(callback)

    def forget(self, callback: Callable[[], object]) -> None:
        """No longer call `callback`."""
        self._callbacks.discard(callback)


class Runtime:
    """Everything a request needs. Built without I/O; `open` connects and loads, `close` frees."""

    def __init__(
        self,
        settings: Settings,
        *,
        router: BackendRouter | None = None,
        registry: ActionRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.database = Database.from_settings(settings)
        self.router = router or build_router(settings)
        self.registry = registry or build_registry(settings)
        self.keys = KeyService(self.database, redis_url=settings.redis_url)
        self.oauth = OAuthService(
            self.database,
            access_lifetime=timedelta(seconds=settings.oauth_access_token_lifetime),
            refresh_lifetime=timedelta(seconds=settings.oauth_refresh_token_lifetime),
        )
        self.personal = PersonalData(self.database)
        self.users = UserService(
            self.database,
            build_limiter(
                settings.login_rate_limit, settings.redis_url, prefix="gptactions:login:"
            ),
        )
        oidc = OidcConfig.from_settings(settings)
        self.oidc = OidcService(oidc, self.database, self.users) if oidc else None
        # Requests and tokens per key (or OAuth user), in Redis when configured; a key's own
        # limits replace the server's, so the counter exists even when neither is set.
        self._counter = build_counter(settings.redis_url)
        rate, tokens = settings.rate_limit, settings.token_limit
        self.limiter = RateLimiter(Rate.parse(rate) if rate else None, self._counter)
        self.quota = TokenQuota(Rate.parse(tokens) if tokens else None, self._counter)
        self.log = InteractionLog(self.database, quota=self.quota)
        self.conversations = ConversationService(
            self.database,
            self.router,
            self.log,
            system_prompt=settings.system_prompt,
            default_max_tokens=settings.default_max_tokens,
        )
        self.templates = TemplateRenderer(
            RenderLimits(settings.template_timeout, settings.template_max_output)
        )
        self.actions = ActionService(
            self.registry,
            self.router,
            self.log,
            max_tokens_limit=settings.max_tokens_limit,
            templates=self.templates,
        )
        self.completions = CompletionService(
            self.router,
            self.log,
            max_tokens_limit=settings.max_tokens_limit,
        )
        self.status = StatusService(self.database, self.router)
        self.usage = UsageService(self.database)
        self.http_log_redactor = LogRedactor(self.router.secrets)
        # Set when the server stops: requests still running end (their replies stored).
        self.stopping = Stopping()
        # The metrics listen to what the services do; none of them imports the metrics.
        self.database.commit_observer = self.metrics.commit_took
        # A request alone in its process commits on the event loop; with others, batches wait
        # for company (store/writer.py).
        self.database.writer.serving = self.metrics.serving
        self.log.observer = self.metrics.interaction_recorded
        self.router.observer = self.metrics
        self.metrics.known_backends(self.router.backends)

        keep = parse_duration(settings.log_retention) if settings.log_retention else None
        self.retention = Retention(self.database, keep)
        self._preparing: asyncio.Task[None] | None = None
        self._purging: asyncio.Task[None] | None = None

    async def open(self, prepare: Callable[[], Awaitable[object]] | None = None) -> None:
        """Migrate the database (when configured to), run `prepare`, and start the backends.

        A database that cannot be reached does not stop the start: requests get 503 while a
        background task retries, and applies the pending migrations once the database is back.
        So does a schema behind this version with GPTACTIONS_AUTO_MIGRATE=false, until
        `gptactions db upgrade` has run.
        """
        self.http_log_redactor.install()
        try:
            if not await self._prepare_database(prepare):
                if self.database.outage.down:
                    log.warning("starting without the database: retrying in the background")
                self._preparing = asyncio.create_task(self._prepare_when_back(prepare))
            await self.router.start()
            if self.settings.redis_url:
                await check_redis(self.settings.redis_url)  # RedisRefused stops the start
            if self.retention.keep_seconds is not None:
                self._purging = asyncio.create_task(self.retention.run())
        except BaseException:
            await self.close()
            raise

    async def _prepare_database(self, prepare: Callable[[], Awaitable[object]] | None) -> bool:
        """Migrate (or check the schema) and prepare, saying what that did (on every start: one
        that waited for its database does it later); False while the database cannot be reached
        or its schema is behind."""
        try:
            migrated = await self._schema()
            self.database.outage.succeeded()
            if migrated is None:
                return False
            # Already at this version's head: `gptactions serve` migrated, and said so, before
            # starting its servers. A migration done here (the database was down then, or a
            # reload started a newer version) is news to say.
            done_before = schema.upgraded(self.database.location, schema.head(), schema.head())
            log.log(logging.DEBUG if migrated == done_before else logging.INFO, "%s", migrated)
            if prepare is not None:
                await prepare()  # `bootstrap_admin_key` says what it did
        except DatabaseUnavailable:
            return False  # the outage log has said why
        except Exception as error:
            if not outage.is_unavailable(error):
                raise
            self.database.outage.failed(error)
            return False
        self.database.outage.succeeded()
        self.database.ready = True
        self.database.writer.start()
        return True

    async def _schema(self) -> str | None:
        """Apply the pending migrations (GPTACTIONS_AUTO_MIGRATE) or check there are none: what
        that did, or None while the schema is behind (said once; /healthz then names it)."""
        location = self.database.location
        if self.settings.auto_migrate:
            done = await self.database.upgrade()
            revisions = schema.Revisions(done.before, schema.head())
            if not done.newer:
                return schema.upgraded(location, done.before, done.after)
        else:
            revisions = await self.database.revisions()
            if revisions.behind:
                problem = schema.needs_upgrade(location, revisions)
                if self.database.waiting_for != problem:
                    log.error("%s (GPTACTIONS_AUTO_MIGRATE=false); 503 until then", problem)
                    self.database.waiting_for = problem
                return None
            if not revisions.newer:
                return f"the database at {location} is at revision {revisions.current}"
        log.warning("%s", schema.newer(location, revisions))
        return f"the database at {location} is at revision {revisions.current}, newer"

    async def _prepare_when_back(self, prepare: Callable[[], Awaitable[object]] | None) -> None:
        try:
            while True:
                await asyncio.sleep(PREPARE_RETRY_EVERY)
                if await self._prepare_database(prepare):
                    return
        except Exception:
            log.exception("preparing the database failed")

    def require_database(self) -> None:
        """Raise `DatabaseUnavailable` while the database is not ready for requests."""
        if not self.database.ready:
            log_of_outage = self.database.outage
            why = log_of_outage.last_error if log_of_outage.down else self.database.waiting_for
            raise DatabaseUnavailable(self.database.location, ConnectionError(why))

    async def close(self) -> None:
        """Stop the backends and close the database."""
        for task in (self._preparing, self._purging):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self.router.close()
            await self.keys.close()
            await self.templates.close()
            await self.database.close()
            await self._counter.close()
            await self.users.close()
            if self.oidc is not None:
                await self.oidc.close()
        finally:
            self.http_log_redactor.remove()


async def bootstrap_admin_key(
    settings: Settings, keys: KeyService, *, may_generate: bool, report_unchanged: bool = False
) -> NewKey | None:
    """The first admin key: `GPTACTIONS_API_KEY`'s when set, else a random one if `may_generate`.

    Returns a generated key, which the caller shows once; None when there is nothing to show.
    Logs what it did (never a secret); that it did nothing only at DEBUG unless
    `report_unchanged` (`gptactions serve` says it once, before its servers start, whose
    start-ups would say it again). Raises NoKeys when no key exists and none may be generated.
    """
    configured = settings.api_key.get_secret_value() if settings.api_key else None
    try:
        created = await keys.ensure_bootstrap_key(
            configured, may_generate=may_generate, report_found=report_unchanged
        )
    except NoKeys:
        if settings.environment == "production":
            raise
        raise NoKeys(
            "no API key exists: set GPTACTIONS_API_KEY, start with `gptactions serve` (which "
            "creates one), or run `gptactions keys create --name admin --admin`"
        ) from None
    if configured is not None:
        if created is not None:  # else the key service said what it found
            log.info("imported GPTACTIONS_API_KEY as admin key %s", created.info.prefix)
        created = None  # imported, not generated: nothing to show
    elif created is not None:
        log.info("created an admin key (id %s), shown once", created.info.id)
    else:
        level = logging.INFO if report_unchanged else logging.DEBUG
        log.log(level, "keys exist and GPTACTIONS_API_KEY is unset: created no key")
    if report_unchanged:  # once a start: keys made before such keys were refused
        for warning in admins_of_one_tenant(await keys.list()):
            log.warning("%s", warning)
    return created


class RedisRefused(ValueError):
    """GPTACTIONS_REDIS_URL names a Redis that answers but refuses it (a database number out of
    range, a wrong user or password): a settings error, which stops the start. Each command
    opening a runtime (`serve`, `chat`, `stdio`, `actions run`) says it in one line, as it says
    the other settings errors (`cli.main`)."""


async def check_redis(url: str, *, report: bool = True) -> bool:
    """Say at start-up whether GPTACTIONS_REDIS_URL answers (its URL without credentials): an
    unreachable Redis does not stop the server, its limits are counted in each process until it
    answers, and the operator learns so now rather than at the first request. A Redis that
    answers and refuses the URL's settings would refuse them forever: RedisRefused.

    `report`: log what was found (else only raise, for a check before the workers start)."""
    import redis.asyncio as redis
    from redis.exceptions import AuthenticationError, ResponseError

    client: Any = redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        async with asyncio.timeout(2):
            await client.ping()
    except (AuthenticationError, ResponseError) as error:  # before ConnectionError, its base
        raise RedisRefused(
            f"GPTACTIONS_REDIS_URL: Redis at {safe_url(url)} answers but refuses it "
            f"({str(error) or type(error).__name__}): check the database number after the port "
            "(0 to 15 unless Redis' `databases` setting allows more), the user and the password"
        ) from None
    except Exception as error:
        if report:
            log.warning(
                "Redis at %s is unreachable (%s): limits are counted in each process, and key "
                "revocations reach the others through the database, until it answers",
                safe_url(url),
                str(error) or type(error).__name__,
            )
        return False
    finally:
        await client.aclose()
    if report:
        log.info("Redis at %s answers: limits are shared by every process using it", safe_url(url))
    return True
