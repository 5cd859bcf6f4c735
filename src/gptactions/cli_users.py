"""The `users` and `oauth clients` commands: end users and the OAuth clients they sign in to."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from gptactions.cli_database import with_database
from gptactions.cli_types import ServiceChoice

if TYPE_CHECKING:  # the commands import what they need: each one starts faster
    from gptactions.store.db import Database

T = TypeVar("T")


def _with_database(work: Callable[[Database], Awaitable[T]]) -> T:
    from gptactions.config import Settings

    return asyncio.run(with_database(Settings(), work))


def _read_password() -> str:
    """Prompted twice on a terminal; one line of stdin otherwise (for scripts)."""
    if sys.stdin.isatty():
        password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    line = sys.stdin.readline()
    if not line:  # standard input is empty or closed: not a password too short
        raise click.UsageError("no password on standard input: pipe it as a line, or use a tty")
    return line.rstrip("\r\n")


@click.group()
def users() -> None:
    """Create, list, disable, enable and delete the users who sign in through OAuth."""


@users.command("create")
@click.option("--username", required=True, help="The user's name; it is their userId.")
def users_create(username: str) -> None:
    """Create a user; the password is prompted for (or read as one line from stdin)."""
    from gptactions.services.users import InvalidUser, UserService

    password = _read_password()
    try:
        info = _with_database(lambda db: UserService(db).create(username, password))
    except InvalidUser as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"created user {info.username}")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def users_list(as_json: bool) -> None:
    """List users: username, created, disabled."""
    from gptactions.services.users import UserService

    found = _with_database(lambda db: UserService(db).list())
    if as_json:
        rows = [
            {
                "username": u.username,
                "createdAt": u.created_at.isoformat(),
                "disabledAt": u.disabled_at.isoformat() if u.disabled_at else None,
            }
            for u in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'USERNAME':32} {'CREATED':16} DISABLED")
    for u in found:
        disabled = u.disabled_at.strftime("%Y-%m-%d %H:%M") if u.disabled_at else "-"
        click.echo(f"{u.username:32} {u.created_at:%Y-%m-%d %H:%M} {disabled}")


@users.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Stop a user from signing in and revoke their tokens."""
    from gptactions.services.users import UserInfo, UserService

    async def disable(db: Database) -> tuple[UserInfo | None, UserInfo | None]:
        service = UserService(db)
        # Disabled again all the same: revoking their tokens is safe to repeat.
        return await service.get(username), await service.disable(username)

    before, after = _with_database(disable)
    if after is None:
        raise click.ClickException(f"no user {username!r}")
    if before is not None and before.disabled_at is not None:
        click.echo(
            f"{username} is already disabled (since {before.disabled_at:%Y-%m-%d %H:%M} UTC)"
        )
        return
    click.echo(f"disabled {username}")


@users.command("enable")
@click.argument("username")
def users_enable(username: str) -> None:
    """Let a disabled user sign in again (their tokens stay revoked)."""
    from gptactions.services.users import UserService

    enabled = _with_database(lambda db: UserService(db).enable(username))
    if enabled is None:
        raise click.ClickException(f"no user {username!r}")
    if enabled.was_disabled_at is None:
        click.echo(f"{username} is already enabled")
        return
    click.echo(
        f"enabled {username} (disabled since {enabled.was_disabled_at:%Y-%m-%d %H:%M} UTC); "
        "the tokens revoked then stay revoked: they sign in again"
    )


@users.command("password")
@click.argument("username")
def users_password(username: str) -> None:
    """Set a user's password (prompted for, or one line of stdin) and revoke their tokens."""
    from gptactions.services.users import InvalidUser, UserService

    # Before the prompt: a mistyped name is not worth typing a password twice.
    if _with_database(lambda db: UserService(db).get(username)) is None:
        raise click.ClickException(f"no user {username!r}")
    password = _read_password()
    try:
        changed = _with_database(lambda db: UserService(db).set_password(username, password))
    except InvalidUser as error:
        raise click.UsageError(str(error)) from None
    if changed is None:  # deleted meanwhile
        raise click.ClickException(f"no user {username!r}")
    if changed.revoked_tokens:
        click.echo(
            f"changed the password of {username} and revoked their "
            f"{changed.revoked_tokens} token(s): they sign in again"
        )
    else:
        click.echo(f"changed the password of {username} (they had no token to revoke)")
    if changed.info.disabled_at is not None:
        click.echo(f"{username} is still disabled (`gptactions users enable {username}`)")


@users.command("delete")
@click.argument("username")
def users_delete(username: str) -> None:
    """Delete a user's account, tokens and data (export it first: `gptactions logs export
    --tenant @users --user USERNAME`)."""
    from gptactions.services.users import UserService

    # The service logs the deletion, for the server's log. Here, with no logging configured,
    # Python would print that warning on stderr: a second wording of the line below.
    quiet = logging.NullHandler()
    service_log = logging.getLogger(UserService.__module__)
    service_log.addHandler(quiet)
    try:
        deleted = _with_database(lambda db: UserService(db).delete(username))
    finally:
        service_log.removeHandler(quiet)
    if deleted is None:
        raise click.ClickException(f"no user {username!r}")
    click.echo(
        f"deleted {username}, with {deleted.conversations} conversations and "
        f"{deleted.interactions} interactions"
    )


@click.group()
def oauth() -> None:
    """The OAuth authorization server (docs/gpt-actions.md)."""


@oauth.group()
def clients() -> None:
    """Register, list, update and revoke OAuth clients (a GPT is one)."""


@clients.command("create")
@click.option("--name", required=True, help="Shown to users on the consent page.")
@click.option(
    "--redirect-uri",
    "redirect_uris",
    required=True,
    multiple=True,
    help="An exact callback URL; repeat for several.",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=ServiceChoice("gptactions.services.oauth", "OAUTH_SCOPES"),
    # The OAuth service's DEFAULT_CLIENT_SCOPES, written out so that the help needs no import of
    # it; tests/test_cli.py checks that they agree.
    help="A scope the client may ask for; repeat (default: chat actions).",
)
@click.option("--public", is_flag=True, help="No secret; PKCE is then required.")
def clients_create(
    name: str, redirect_uris: tuple[str, ...], scopes: tuple[str, ...], public: bool
) -> None:
    """Register a client; client_id and client_secret are the last two lines (the secret shown
    once), client_id alone the last line for a public client, which has no secret."""
    from gptactions.services.oauth import DEFAULT_CLIENT_SCOPES, OAuthService

    chosen = scopes or DEFAULT_CLIENT_SCOPES
    try:
        new = _with_database(
            lambda db: OAuthService(db).create_client(
                name, redirect_uris, scopes=chosen, public=public
            )
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    click.echo(f"created client {new.info.name} (scopes: {' '.join(new.info.scopes)})", err=True)
    if new.secret is None:
        click.echo("a public client: no secret; it signs in with PKCE (S256)", err=True)
        click.echo(f"client_id={new.info.id}")
        return
    click.echo("the secret is shown only now:", err=True)
    click.echo(f"client_id={new.info.id}")
    click.echo(f"client_secret={new.secret}")


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def clients_list(as_json: bool) -> None:
    """List clients: id, name, scopes, created, revoked, redirect URIs."""
    from gptactions.services.oauth import OAuthService

    found = _with_database(lambda db: OAuthService(db).list_clients())
    if as_json:
        rows = [
            {
                "clientId": c.id,
                "name": c.name,
                "scopes": list(c.scopes),
                "redirectUris": list(c.redirect_uris),
                "public": c.public,
                "createdAt": c.created_at.isoformat(),
                "revokedAt": c.revoked_at.isoformat() if c.revoked_at else None,
            }
            for c in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    # A table with its header as `keys list` and `users list` print, even with no row.
    table = [("ID", "NAME", "SCOPES", "CREATED", "REVOKED", "REDIRECT URIS")]
    for c in found:
        revoked = f"{c.revoked_at:%Y-%m-%d %H:%M}" if c.revoked_at else "-"
        scopes, uris = " ".join(c.scopes), " ".join(c.redirect_uris)
        table.append((c.id, c.name, scopes, f"{c.created_at:%Y-%m-%d %H:%M}", revoked, uris))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))


@clients.command("update")
@click.argument("client_id")
@click.option("--name", default=None, help="A new name (shown on the consent page).")
@click.option(
    "--redirect-uri",
    "redirect_uris",
    multiple=True,
    help="An exact callback URL; repeat for several: they replace the client's.",
)
@click.option(
    "--add-redirect-uri",
    "add_redirect_uris",
    multiple=True,
    help="A callback URL to add to the client's; repeat for several.",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=ServiceChoice("gptactions.services.oauth", "OAUTH_SCOPES"),
    help="A scope; repeat: they replace the client's (tokens with a dropped one are revoked).",
)
def clients_update(
    client_id: str,
    name: str | None,
    redirect_uris: tuple[str, ...],
    add_redirect_uris: tuple[str, ...],
    scopes: tuple[str, ...],
) -> None:
    """Change a client's name, redirect URIs or scopes; its id and secret stay."""
    from gptactions.services.oauth import OAuthService
    from gptactions.services.oauth_types import RevokedClient

    if name is None and not redirect_uris and not add_redirect_uris and not scopes:
        raise click.UsageError(
            "nothing to change: give --name, --redirect-uri, --add-redirect-uri or --scope"
        )
    try:
        done = _with_database(
            lambda db: OAuthService(db).update_client(
                client_id,
                name=name,
                redirect_uris=redirect_uris or None,
                add_redirect_uris=add_redirect_uris,
                scopes=scopes or None,
            )
        )
    except RevokedClient as error:
        raise click.ClickException(str(error)) from None
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if done is None:
        raise click.ClickException(f"no client {client_id!r}")
    c = done.info
    click.echo(f"updated {c.id} {c.name} [{' '.join(c.scopes)}]")
    for uri in c.redirect_uris:
        click.echo(f"    {uri}")
    dropped = " ".join(done.dropped_scopes)
    if done.revoked_tokens:
        click.echo(
            f"dropped the scope(s) {dropped}: revoked the {done.revoked_tokens} token(s) "
            "holding one (their users sign in again)"
        )
    elif dropped:
        click.echo(f"dropped the scope(s) {dropped}: no token held one")


@clients.command("revoke")
@click.argument("client_id")
def clients_revoke(client_id: str) -> None:
    """Revoke a client and every token issued to it."""
    from gptactions.services.oauth import OAuthService

    info = _with_database(lambda db: OAuthService(db).revoke_client(client_id))
    if info is None:
        raise click.ClickException(f"no client {client_id!r}")
    click.echo(f"revoked {info.id} ({info.name})")
