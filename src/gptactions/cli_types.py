"""Click parameter types, and the output file, that the commands share."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click


class ServiceChoice(click.Choice[str]):
    """One of the names a service module defines (`module.attribute`, a tuple of strings).

    The tuple is read the first time the option is parsed or its help is shown, not when the
    command line is built: the services import the database layer, which `gptactions --help`
    and most commands' start-up do not need.
    """

    def __init__(self, module: str, attribute: str) -> None:
        self._where = (module, attribute)
        self.case_sensitive = True

    def __getattr__(self, name: str) -> Any:
        # Reached only while `choices` is unset (a normal attribute afterwards).
        if name != "choices":
            raise AttributeError(name)
        module, attribute = self._where
        self.choices = tuple(getattr(importlib.import_module(module), attribute))
        return self.choices


def cannot_write(name: object, error: OSError) -> click.ClickException:
    """The error of a command that cannot write its output `name`."""
    return click.ClickException(f"cannot write {name}: {error.strerror or error}")


def check_writable(path: Path) -> None:
    """Stop when `path` cannot be written (no such directory, no permission), leaving it as it
    was: opened for appending, and removed again if that created it."""
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        raise cannot_write(path, error) from None
    if not existed:
        path.unlink(missing_ok=True)


class Output:
    """Where a command writes (`logs export`). An error writing it (a full disk) is the output's:
    as an OSError, `with_database` would take it for the database's outage."""

    def __init__(self, stream: IO[str], name: object) -> None:
        self._stream, self._name = stream, name

    @classmethod
    @contextlib.contextmanager
    def file(cls, path: Path) -> Iterator[Output]:
        """The file at `path`, emptied, then closed: what it still buffers written at the end.

        A new file is readable by its owner only (0600), whatever the umask: an export holds
        conversations. A file that exists keeps its mode, which is the operator's choice.
        """
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            stream = open(descriptor, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed below)
        except OSError as error:
            raise cannot_write(path, error) from None
        try:
            yield cls(stream, path)
        except BaseException:
            with contextlib.suppress(OSError):  # the error already told is the one to tell
                stream.close()
            raise
        try:
            stream.close()
        except OSError as error:
            raise cannot_write(path, error) from None

    def write(self, text: str) -> int:
        """Write `text` to the stream."""
        try:
            return self._stream.write(text)
        except BrokenPipeError:  # the reader went away (`| head`): click ends quietly
            raise
        except OSError as error:
            raise cannot_write(self._name, error) from None

    def flush(self) -> None:
        """Flush the stream, as `write` writes."""
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            raise cannot_write(self._name, error) from None
