"""The `keys` commands: create, list, rotate, update and revoke API keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gptactions.cli_database import with_database
from gptactions.cli_types import ServiceChoice

if TYPE_CHECKING:  # the commands import what they need: each one starts faster
    from gptactions.config import Settings
    from gptactions.services.keys import KeyInfo, KeyService
    from gptactions.store.db import Database

T = TypeVar("T")


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(work())


async def with_keys(
    settings: Settings, work: Callable[[KeyService], Awaitable[T]], *, serving: bool = False
) -> T:
    """Run `work` with the key service; revocations reach the replicas' caches through Redis too.
    `serving`: for the server's start (`with_database`), which a Redis refusing
    GPTACTIONS_REDIS_URL (a database number out of range, a wrong password) stops here, before
    any worker starts; an unreachable one does not (the workers say so)."""

    from gptactions.services.keys import KeyService

    if serving and settings.redis_url:
        from gptactions.runtime import check_redis

        await check_redis(settings.redis_url, report=False)  # RedisRefused: one line (cli.main)

    async def with_service(database: Database) -> T:
        service = KeyService(database, redis_url=settings.redis_url)
        try:
            return await work(service)
        finally:
            await service.close()

    return await with_database(settings, with_service, serving=serving)


def _change_keys(work: Callable[[KeyService], Awaitable[T]]) -> T:
    """`work` on the key service; a key found by none or several, or unchangeable, exits 1."""
    from gptactions.config import Settings
    from gptactions.services.keys import AmbiguousKey, KeyUnchangeable

    try:
        return _run(lambda: with_keys(Settings(), work))
    except (AmbiguousKey, KeyUnchangeable) as error:
        raise click.ClickException(str(error)) from None


def _no_key(key_id: str) -> click.ClickException:
    return click.ClickException(f"no key with id or prefix {key_id!r} (see `gptactions keys list`)")


def _limits(info: KeyInfo) -> str:
    return (
        f"limits: requests {info.rate_limit or 'as the server (GPTACTIONS_RATE_LIMIT)'}, "
        f"tokens {info.token_limit or 'as the server (GPTACTIONS_TOKEN_LIMIT)'}"
    )


@click.group()
def keys() -> None:
    """Create, list, rotate, update and revoke API keys."""


_SCOPE_CHOICE = ServiceChoice("gptactions.services.keys", "SCOPES")


@keys.command("create")
@click.option("--name", required=True, help="What the key is for.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=_SCOPE_CHOICE,
    # The defaults are the key service's (DEFAULT_SCOPES, DEFAULT_TENANT), written out so that
    # the help needs no import of it; tests/test_cli.py checks that they agree.
    help="A scope; repeat for several (default: chat actions logs).",
)
@click.option(
    "--admin",
    is_flag=True,
    help="Every scope, and every tenant's logs (only with the default tenant).",
)
@click.option("--tenant", default="default", show_default=True, help="The key's tenant.")
@click.option(
    "--rate-limit",
    default=None,
    metavar="N/PERIOD",
    help="Requests per period for this key, e.g. 60/minute (default: GPTACTIONS_RATE_LIMIT).",
)
@click.option(
    "--token-limit",
    default=None,
    metavar="N/PERIOD",
    help="Tokens per period for this key, e.g. 100000/day (default: GPTACTIONS_TOKEN_LIMIT).",
)
def keys_create(
    name: str,
    scopes: tuple[str, ...],
    admin: bool,
    tenant: str,
    rate_limit: str | None,
    token_limit: str | None,
) -> None:
    """Create a key and print it; it is shown only this once (alone on the last line)."""
    from gptactions.config import Settings
    from gptactions.services.keys import DEFAULT_SCOPES, SCOPES, KeyService, check_admin_tenant

    chosen = SCOPES if admin else (scopes or DEFAULT_SCOPES)
    try:
        check_admin_tenant(chosen, tenant)  # before the database is opened (or created)
        new = _run(
            lambda: with_database(
                Settings(),
                lambda db: KeyService(db).create(
                    name,
                    scopes=chosen,
                    tenant=tenant,
                    rate_limit=rate_limit,
                    token_limit=token_limit,
                ),
            )
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    info = new.info
    click.echo(f"created key {info.prefix}… ({info.name}, tenant {info.tenant})", err=True)
    if info.rate_limit or info.token_limit:
        click.echo(_limits(info), err=True)
    click.echo(f"scopes: {' '.join(info.scopes)}; it is shown only now:", err=True)
    click.echo(new.secret)


def _key_json(key: KeyInfo) -> dict[str, Any]:
    return {
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "tenant": key.tenant,
        "scopes": list(key.scopes),
        "imported": key.imported,
        "rateLimit": key.rate_limit,
        "tokenLimit": key.token_limit,
        "createdAt": key.created_at.isoformat(),
        "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
        "expiresAt": key.expires_at.isoformat() if key.expires_at else None,
    }


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(as_json: bool) -> None:
    """List keys: id, prefix, name, tenant, scopes, own limits, created, revoked.

    A limit shown as `-` is the server's (GPTACTIONS_RATE_LIMIT, GPTACTIONS_TOKEN_LIMIT). A key
    rotated with a grace period shows when it expires; once it has, that is when it was revoked.
    """
    from gptactions.config import Settings
    from gptactions.services.keys import KeyService

    found = _run(lambda: with_database(Settings(), lambda db: KeyService(db).list()))
    if as_json:
        click.echo(json.dumps([_key_json(k) for k in found], indent=2))
        _warn_of_admins_of_one_tenant(found)
        return
    rows = [("ID", "PREFIX", "NAME", "TENANT", "SCOPES", "RATE", "TOKENS", "CREATED", "REVOKED")]
    for k in found:
        if k.revoked_at:
            revoked = f"{k.revoked_at:%Y-%m-%d %H:%M}"
        elif k.expires_at:
            revoked = f"expires {k.expires_at:%Y-%m-%d %H:%M}"
        else:
            revoked = "-"
        created = f"{k.created_at:%Y-%m-%d %H:%M}"
        rows.append(
            (
                k.id,
                k.prefix,
                k.name,
                k.tenant,
                " ".join(k.scopes),
                k.rate_limit or "-",
                k.token_limit or "-",
                created,
                revoked,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))
    if any(k.imported for k in found):
        click.echo("(a sha256: prefix is an imported key's hash fragment)", err=True)
    _warn_of_admins_of_one_tenant(found)


def _warn_of_admins_of_one_tenant(found: list[KeyInfo]) -> None:
    """On stderr: each working key that combines the admin scope with a tenant (refused now, but
    made before), which reads every tenant's logs."""
    from gptactions.services.keys import admins_of_one_tenant

    for warning in admins_of_one_tenant(found):
        click.echo(f"Warning: {warning}", err=True)


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id or visible prefix (as `keys list` shows them)."""
    done = _change_keys(lambda keys: keys.revoke(key_id))
    if done is None:
        raise _no_key(key_id)
    key = done.key
    if done.already:
        assert key.revoked_at is not None
        click.echo(
            f"{key.prefix}… ({key.name}, id {key.id}) was already revoked "
            f"on {key.revoked_at:%Y-%m-%d %H:%M} UTC"
        )
    else:
        click.echo(f"revoked {key.prefix}… ({key.name}, id {key.id})")


@keys.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace",
    default=None,
    metavar="DURATION",
    help="Keep the old key working this long (90m, 12h, 7d); default: it is revoked at once.",
)
def keys_rotate(key_id: str, grace: str | None) -> None:
    """Replace a key by a new one with its name, tenant, scopes and limits (printed once, last)."""
    from gptactions.config import parse_duration

    try:
        period = timedelta(seconds=parse_duration(grace)) if grace is not None else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--grace") from None
    rotation = _change_keys(lambda keys: keys.rotate(key_id, grace=period))
    if rotation is None:
        raise _no_key(key_id)
    old, new = rotation.old, rotation.new.info
    click.echo(
        f"rotated key {old.prefix}… ({old.name}, tenant {old.tenant}): the new key is "
        f"{new.prefix}… (id {new.id})",
        err=True,
    )
    if old.expires_at is not None:
        click.echo(
            f"the old key (id {old.id}) works until {old.expires_at:%Y-%m-%d %H:%M:%S} UTC "
            f"({grace} from now), then stops; `keys revoke {old.id}` ends it sooner",
            err=True,
        )
    else:
        click.echo(f"the old key (id {old.id}) is revoked", err=True)
    if new.rate_limit or new.token_limit:
        click.echo(_limits(new), err=True)
    click.echo(f"scopes: {' '.join(new.scopes)}; it is shown only now:", err=True)
    click.echo(rotation.new.secret)


@keys.command("update")
@click.argument("key_id")
@click.option("--name", default=None, help="A new name.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=_SCOPE_CHOICE,
    help="A scope; repeat for several: they replace the key's scopes.",
)
@click.option(
    "--rate-limit",
    default=None,
    metavar="N/PERIOD",
    help="Requests per period, e.g. 60/minute; `default`: the server's (GPTACTIONS_RATE_LIMIT).",
)
@click.option(
    "--token-limit",
    default=None,
    metavar="N/PERIOD",
    help="Tokens per period, e.g. 100000/day; `default`: the server's (GPTACTIONS_TOKEN_LIMIT).",
)
def keys_update(
    key_id: str,
    name: str | None,
    scopes: tuple[str, ...],
    rate_limit: str | None,
    token_limit: str | None,
) -> None:
    """Change a key's name, scopes or own limits; every server applies it within a second."""
    if name is None and not scopes and rate_limit is None and token_limit is None:
        raise click.UsageError(
            "nothing to change: give --name, --scope, --rate-limit or --token-limit"
        )
    try:
        key = _change_keys(
            lambda keys: keys.update(
                key_id,
                name=name,
                scopes=scopes or None,
                rate_limit=rate_limit,
                token_limit=token_limit,
            )
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if key is None:
        raise _no_key(key_id)
    click.echo(f"updated {key.prefix}… ({key.name}, id {key.id})")
    click.echo(f"scopes: {' '.join(key.scopes)}")
    click.echo(_limits(key))
