"""The `gptactions` command line. Each command calls services; none holds logic of its own."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import errno
import io
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gptactions import __version__
from gptactions.cli_actions import actions, load_registry
from gptactions.cli_database import DatabaseUnreachable, sqlite_file, unreachable, with_database
from gptactions.cli_keys import keys, with_keys
from gptactions.cli_types import Output, check_writable
from gptactions.cli_users import oauth, users

# Each command imports what it needs when it runs: the settings, the services and the database
# layer (SQLAlchemy, Alembic) cost a second or more to import, which `--help`, a settings error or
# `openapi` would pay for nothing.
if TYPE_CHECKING:
    from gptactions.config import Settings
    from gptactions.services.interactions import LogEntry
    from gptactions.services.keys import NewKey
    from gptactions.store.db import Database, Upgrade

T = TypeVar("T")


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(work())


def announce_key(new_key: NewKey) -> None:
    """Show a newly created admin key, once, on the terminal (never through logging)."""
    click.echo(
        "\n  An admin API key was created. It is shown only this once; keep it safe:\n\n"
        f"    {new_key.secret}\n"
    )


@click.group()
@click.version_option(__version__, prog_name="gptactions")
def cli() -> None:
    """gptactions: a self-hosted server for the GPT Actions API."""


@cli.command()
@click.option("--host", default=None, help="Address to listen on (GPTACTIONS_HOST).")
@click.option("--port", type=int, default=None, help="Port to listen on (GPTACTIONS_PORT).")
@click.option("--workers", type=int, default=None, help="Worker processes (GPTACTIONS_WORKERS).")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Migrate the database, create the first admin key if there is none, and serve."""
    from gptactions.config import Settings
    from gptactions.llm.factory import BackendConfigError, backend_configs, check_model_files
    from gptactions.metrics import shared_between_workers
    from gptactions.runtime import bootstrap_admin_key
    from gptactions.services.keys import NoKeys
    from gptactions.serving import address
    from gptactions.workers import run as run_server

    given: dict[str, Any] = {"host": host, "port": port, "workers": workers}
    overrides = {name: value for name, value in given.items() if value}
    settings = Settings(**overrides)
    from gptactions.config_warnings import settings_warnings

    for warning in settings_warnings(settings):  # a typo'd variable, an unsafe production one
        _log(logging.WARNING, warning, settings.log_level)
    _check_port_free(settings.host, settings.port)  # before migrating and loading anything
    load_registry(settings)  # an invalid actions file stops start-up here, before any worker
    try:
        # And so do inconsistent backends, credentials in a URL, or a model file not there.
        check_model_files(settings, backend_configs(settings))
    except BackendConfigError as error:
        raise click.ClickException(str(error)) from None
    # Done once here, before any worker starts, so workers never race to migrate or create keys;
    # each worker's start-up then finds the key and generates none.
    may_generate = settings.environment == "development"
    try:
        # What the start-up logs (a key imported or revoked), at the server's level.
        with _timestamped_logs(settings.log_level):
            created = _run(
                lambda: with_keys(
                    settings,
                    lambda keys: bootstrap_admin_key(
                        settings, keys, may_generate=may_generate, report_unchanged=True
                    ),
                    serving=True,
                )
            )
    except NoKeys as error:
        raise click.ClickException(str(error)) from None
    except DatabaseUnreachable as error:
        # A replica may boot before its database: serve, answering 503 until it is back.
        _log(logging.WARNING, f"{error}; serving anyway (503 until it answers)", settings.log_level)
        created = None
    if created is not None:
        announce_key(created)
    for name, value in overrides.items():
        os.environ[f"GPTACTIONS_{name.upper()}"] = str(value)
    # Not "serving on" yet: the server says that once it listens, its model loaded.
    several = f" with {settings.workers} workers" if settings.workers > 1 else ""
    starting = f"gptactions {__version__} starting on {address(settings.host, settings.port)}"
    _log(logging.INFO, f"{starting}{several}", settings.log_level)
    with shared_between_workers(settings.workers):
        run_server(settings)


def _log(level: int, message: str, threshold: str = "info") -> None:
    """A line of the command's own on stderr, as the server's log writes every line."""
    with _timestamped_logs(threshold):
        logging.getLogger("gptactions").log(level, "%s", message)


@contextlib.contextmanager
def _timestamped_logs(threshold: str = "info") -> Iterator[None]:
    """The log's records written as the server's log writes them, while the command works
    before the server (which configures logging its own way) starts: ours from `threshold`
    (GPTACTIONS_LOG_LEVEL) up."""
    from gptactions import serving

    handler = logging.StreamHandler(sys.stderr)
    app_format = serving.log_config("info")["formatters"]["app"]["fmt"]
    handler.setFormatter(serving.IsoFormatter(app_format, use_colors=False))
    root, ours = logging.getLogger(), logging.getLogger("gptactions")
    level = ours.level
    root.addHandler(handler)
    if not level:  # our own lines; the libraries' (alembic's chatter) stay at WARNING
        ours.setLevel(threshold.upper())
    try:
        yield
    finally:
        root.removeHandler(handler)
        ours.setLevel(level)


def _check_port_free(host: str, port: int) -> None:
    """Stop with a plain message when another process already listens where we would."""
    # The same socket uvicorn binds (SO_REUSEADDR, so a port in TIME_WAIT is not "in use").
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            # Anything else (a privileged port, an unknown address) is left for uvicorn to
            # report: only a taken port is worth stopping before the migrations and the model.
            if error.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is already in use (another gptactions server?): "
                    "stop it, or choose another port with --port or GPTACTIONS_PORT"
                ) from None


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration, and say what that did."""
    from gptactions.store import schema

    location, done = _migrate(lambda database: database.upgrade())
    if done.newer:
        # Exit 0: the database serves this version as it is (migrations only add), and a
        # deploy script that upgrades before restarting must not fail during a rollback.
        revisions = schema.Revisions(done.before, schema.head())
        click.echo(f"{schema.newer(location, revisions)}; nothing to do")
    else:
        click.echo(schema.upgraded(location, done.before, done.after))


@db.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def db_downgrade(revision: str, yes: bool) -> None:
    """Undo the migrations after REVISION (with the version that applied them), to run an
    older version on the database; what they added is dropped, with its data."""
    from gptactions.store.schema import UnknownRevision, require_known

    try:
        require_known(revision)
    except UnknownRevision as error:
        raise click.ClickException(str(error)) from None
    if not yes:
        click.confirm(
            f"Undo every migration after revision {revision}? The tables and columns they added "
            "are dropped, with their data",
            abort=True,
        )
    try:
        location, done = _migrate(lambda database: database.downgrade(revision))
    except UnknownRevision as error:
        raise click.ClickException(str(error)) from None
    if done.before == done.after:
        click.echo(f"the database at {location} is already at revision {done.after}; nothing to do")
    else:
        click.echo(
            f"downgraded the database at {location} from revision {done.before} to {done.after}"
        )
        from gptactions.config import Settings

        if Settings().auto_migrate:
            click.echo(
                "warning: this version migrates it back at its next command or start "
                "(GPTACTIONS_AUTO_MIGRATE): install the older version now, or set "
                "GPTACTIONS_AUTO_MIGRATE=false",
                err=True,
            )


def _migrate(change: Callable[[Database], Coroutine[Any, Any, Upgrade]]) -> tuple[str, Upgrade]:
    """`change` on the settings' database (`db upgrade`, `db downgrade`): where, and what it did."""
    from gptactions.config import Settings
    from gptactions.store.db import Database

    settings = Settings()

    async def migrate() -> tuple[str, Upgrade]:
        database = Database.from_settings(settings)
        try:
            return database.location, await change(database)
        except Exception as error:
            from gptactions.store import outage

            if outage.is_unavailable(error):
                raise unreachable(database.location, error) from None
            raise
        finally:
            await database.close()

    return _run(migrate)


@db.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def db_backup(path: Path) -> None:
    """Back up SQLite to PATH while the server runs; for PostgreSQL, print the pg_dump line."""
    import sqlite3

    from gptactions.config import Settings, to_async_url
    from gptactions.store.backup import backup_sqlite, pg_dump_command

    settings = Settings()
    if not to_async_url(settings.database_url).startswith("sqlite"):
        from sqlalchemy import make_url

        # A line to paste as it is: without the URL's password, which it would show (and keep
        # in the shell's history), nor a placeholder for it, which pg_dump would send as one.
        url = make_url(settings.database_url)
        unsecret = url._replace(password=None).render_as_string(hide_password=False)
        click.echo(pg_dump_command(unsecret, path))
        if url.password:
            click.echo(
                f"pg_dump asks for the password of {url.username} (GPTACTIONS_DATABASE_URL's); "
                "to run it unattended, export PGPASSWORD or add it to ~/.pgpass first",
                err=True,
            )
        return
    source = sqlite_file(settings)
    if source is None:
        raise click.ClickException("GPTACTIONS_DATABASE_URL names no SQLite file to back up")
    if not source.exists():  # SQLite itself would say only "unable to open database file"
        raise click.ClickException(
            f"there is no database at {source} (is GPTACTIONS_DATABASE_URL the server's?)"
        )
    try:
        backup_sqlite(str(source), path)
    except (FileExistsError, sqlite3.Error) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"backed up {source} to {path}")


@cli.group()
def logs() -> None:
    """The interaction log."""


@logs.command("purge")
@click.option(
    "--older-than", "older_than", required=True, help="Age of the oldest rows to keep: 30d, 12h."
)
def logs_purge(older_than: str) -> None:
    """Delete interactions older than --older-than, and the conversations left empty."""
    from gptactions.config import Settings, parse_duration

    settings = Settings()
    try:
        seconds = parse_duration(older_than)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--older-than") from None
    from gptactions.services.retention import Retention

    purged = _run(
        lambda: with_database(settings, lambda db: Retention(db).purge_older_than(seconds))
    )
    click.echo(
        f"deleted {purged.interactions} interaction(s) older than {older_than} and "
        f"{purged.conversations} empty conversation(s)"
    )


class _Moment(click.ParamType[datetime]):
    """A time in ISO 8601; without an offset, UTC."""

    name = "time"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            example = "2026-01-31 or 2026-01-31T12:00:00Z"
            self.fail(f"{value!r} is not a time like {example}", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@logs.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="One JSON object per line, or CSV with a header.",
)
@click.option("--since", type=_Moment(), help="Only interactions at or after this time.")
@click.option("--until", type=_Moment(), help="Only interactions before this time.")
@click.option(
    "--user",
    "user_id",
    help="Only this userId's interactions (of every tenant, unless --tenant says).",
)
@click.option(
    "--tenant",
    help="Only this tenant's interactions (default: every tenant); @users: those of the users "
    "who sign in by OAuth (`gptactions users`).",
)
@click.option(
    "--q",
    "search",
    metavar="WORDS",
    help="Only interactions whose message and reply hold every one of these words (as "
    "GET /logs?q= searches).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of standard output.",
)
def logs_export(
    fmt: str,
    since: datetime | None,
    until: datetime | None,
    user_id: str | None,
    tenant: str | None,
    search: str | None,
    output: Path | None,
) -> None:
    """Write the interaction log, newest first, a page at a time (any size fits in memory)."""
    from gptactions.config import Settings
    from gptactions.services.errors import ServiceError
    from gptactions.services.interactions import InteractionLog, LogQuery

    settings = Settings()
    query = LogQuery(user_id=user_id, since=since, until=until, q=search)
    if output is not None:
        check_writable(output)  # before the database: a mistyped directory is told at once

    async def export(database: Database) -> int:
        entries = InteractionLog(database).export(query, tenant=tenant)
        if output is not None:
            with Output.file(output) as sink:
                return await _write_export(entries, fmt, sink)
        stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        sink = Output(stream, "standard output")
        try:
            return await _write_export(entries, fmt, sink)
        finally:
            sink.flush()
            stream.detach()  # standard output stays open for click

    try:
        count = _run(lambda: with_database(settings, export))
    except ServiceError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"exported {count} interaction(s)", err=True)


async def _write_export(entries: AsyncIterator[LogEntry], fmt: str, stream: Output) -> int:
    """Write each entry as it comes; how many there were."""
    from gptactions.api.logs import EXPORT_FIELDS, export_item

    writer = csv.DictWriter(stream, EXPORT_FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    count = 0
    async for entry in entries:
        item = export_item(entry)
        if writer is not None:
            writer.writerow(item)
        else:
            stream.write(json.dumps(item, ensure_ascii=False) + "\n")
        count += 1
    return count


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@click.option(
    "--scopes",
    default=None,
    help="Only the operations these scopes can call, e.g. chat,actions (what a GPT imports).",
)
@click.option(
    "--auth",
    type=click.Choice(["key", "oauth"]),
    default="key",
    help="Who holds the scopes: an API key, or a GPT's OAuth token (which also reaches its "
    "user's own data).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Check it against ChatGPT's rules and the settings instead; exit 1 on any finding.",
)
def openapi(fmt: str, scopes: str | None, auth: str, check: bool) -> None:
    """Print the OpenAPI document this server serves (or check its GPT Actions readiness)."""
    import yaml

    from gptactions.api import readiness
    from gptactions.api.document import document_view, parse_scopes
    from gptactions.api.forwarded import local_origin
    from gptactions.api.openapi import build_document
    from gptactions.config import Settings
    from gptactions.llm.factory import build_router
    from gptactions.services.errors import ServiceError
    from gptactions.services.keys import KeyService

    settings = Settings()
    try:
        wanted = parse_scopes(scopes)
    except ServiceError as error:
        raise click.BadParameter(str(error), param_hint="--scopes") from None
    built = build_document(settings, load_registry(settings), build_router(settings).names)
    document = document_view(
        built, settings, origin=local_origin(settings), scopes=wanted, oauth=auth == "oauth"
    )
    if check:
        # An OAuth GPT is given no key, so the keys' scopes are no concern of its check.
        keys = (
            []
            if auth == "oauth"
            else _run(lambda: with_database(settings, lambda db: KeyService(db).list()))
        )
        findings = readiness.check(document, settings, readiness.gpt_keys(keys))
        click.echo("\n".join(readiness.lines(findings)))
        if findings:
            raise SystemExit(1)
    elif fmt == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)


@cli.command()
@click.option("--user", default="terminal", show_default=True, help="The userId to chat as.")
@click.option("--max-tokens", type=int, default=None, help="Most tokens per reply.")
def chat(user: str, max_tokens: int | None) -> None:
    """Talk to the model in the terminal; the conversation is stored like any other."""
    from gptactions.config import Settings

    asyncio.run(_chat(Settings(), user, max_tokens))


async def _checked(database: Database) -> None:
    """Nothing more: `with_database` has checked the schema (or created it) and said so."""


async def _chat(settings: Settings, user: str, max_tokens: int | None) -> None:
    from gptactions.runtime import Runtime
    from gptactions.services.conversations import Turn
    from gptactions.services.keys import TERMINAL

    await with_database(settings, _checked)  # as every command: created, migrated, or refused
    runtime = Runtime(settings)
    await runtime.open()
    conversation_id: str | None = None
    click.echo(f"chatting with {runtime.router.resolve().model}; an empty line or Ctrl-D ends.")
    try:
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
                break
            if not line.strip():
                break
            turn = Turn(user, line, conversation_id=conversation_id, max_tokens=max_tokens)
            try:
                if conversation_id is None:
                    reply = await runtime.conversations.start(TERMINAL, turn)
                else:
                    reply = await runtime.conversations.respond(TERMINAL, turn)
            except Exception as error:  # shown, and the chat goes on
                click.echo(f"error: {error}", err=True)
                continue
            conversation_id = reply.conversation_id
            click.echo(f"model> {reply.reply}")
    finally:
        await runtime.close()


@cli.command("mcp")
@click.option(
    "--key",
    envvar="GPTACTIONS_MCP_KEY",
    show_envvar=True,
    default=None,
    help="Act as this API key (its tenant and scopes); default: the command line's own caller.",
)
def mcp_stdio(key: str | None) -> None:
    """Serve the MCP tools on standard input and output, for desktop clients."""
    from gptactions.config import Settings

    asyncio.run(_mcp_stdio(Settings(), key))


async def _mcp_stdio(settings: Settings, key: str | None) -> None:
    from gptactions.api.mcp import serve_stdio
    from gptactions.runtime import Runtime
    from gptactions.services.keys import TERMINAL

    await with_database(settings, _checked)  # as every command: created, migrated, or refused
    runtime = Runtime(settings)
    await runtime.open()
    try:
        if key is None:
            principal = TERMINAL
        else:
            found = await runtime.keys.authenticate(key)
            if found is None:
                raise click.ClickException("the API key is not valid (unknown or revoked)")
            principal = found
        await serve_stdio(runtime, principal)
    finally:
        await runtime.close()


cli.add_command(keys)
cli.add_command(actions)
cli.add_command(users)
cli.add_command(oauth)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the `gptactions` command."""
    try:
        return cli.main(args=argv, prog_name="gptactions")
    except Exception as error:
        # Only a command that read the settings raises these: pydantic is imported by then.
        from pydantic import ValidationError
        from pydantic_settings import SettingsError

        from gptactions.config import (
            Settings,
            describe_invalid_settings,
            describe_unreadable_settings,
        )

        if isinstance(error, ValidationError) and error.title == Settings.__name__:
            # A mistyped GPTACTIONS_* variable: say which, not pydantic's traceback.
            click.echo(f"Error: {describe_invalid_settings(error)}", err=True)
            raise SystemExit(1) from None
        if isinstance(error, SettingsError):  # a variable read as JSON (GPTACTIONS_BACKENDS)
            click.echo(f"Error: {describe_unreadable_settings(error)}", err=True)
            raise SystemExit(1) from None
        from gptactions.runtime import RedisRefused

        if isinstance(error, RedisRefused):  # a Redis that answers and refuses the URL
            click.echo(f"Error: {error}", err=True)
            raise SystemExit(1) from None
        raise


if __name__ == "__main__":
    sys.exit(main())
