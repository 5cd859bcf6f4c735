"""What the command line says when the problem is not the database: an output file that cannot
be written is named as such, before the database is opened where it can be told then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import gptactions


def test_logs_export_to_a_missing_directory_names_the_file_not_the_database(
    isolated: Path,
) -> None:
    target = isolated / "no-such-dir" / "log.jsonl"

    refused = gptactions("logs", "export", "--output", str(target), cwd=isolated)

    assert refused.returncode == 1
    assert refused.stderr == f"Error: cannot write {target}: No such file or directory\n"
    assert not (isolated / "server.db").exists()  # told before the database is opened (created)


def test_a_logs_export_file_is_readable_by_its_owner_only(isolated: Path) -> None:
    """Every tenant's conversations: not for the machine's other users, whatever the umask."""
    previous = os.umask(0o022)  # the usual one, for the command run below
    try:
        made = gptactions("logs", "export", "--output", "log.jsonl", cwd=isolated)
    finally:
        os.umask(previous)
    assert made.returncode == 0, made.stderr
    assert (isolated / "log.jsonl").stat().st_mode & 0o777 == 0o600


def test_logs_export_leaves_its_output_file_alone_when_the_database_is_down(
    isolated: Path,
) -> None:
    kept = isolated / "log.jsonl"
    kept.write_text("yesterday's export\n")
    down = {"GPTACTIONS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing"}

    failed = gptactions("logs", "export", "--output", str(kept), cwd=isolated, env=down)
    new = gptactions("logs", "export", "--output", "new.jsonl", cwd=isolated, env=down)

    assert failed.returncode == 1 and "is unreachable" in failed.stderr, failed.stderr
    assert kept.read_text() == "yesterday's export\n"
    assert new.returncode == 1 and not (isolated / "new.jsonl").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full to fill")
def test_logs_export_to_a_full_disk_names_the_output_not_the_database(isolated: Path) -> None:
    """A write that fails past the first check (/dev/full: every write, `No space left`)."""
    to_file = gptactions("logs", "export", "--format", "csv", "--output", "/dev/full", cwd=isolated)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    environment["GPTACTIONS_DATABASE_URL"] = f"sqlite:///{isolated / 'server.db'}"
    with open("/dev/full", "w") as full:  # `gptactions logs export > /dev/full`
        to_stdout = subprocess.run(
            [sys.executable, "-m", "gptactions", "logs", "export", "--format", "csv"],
            cwd=isolated,
            env=environment,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )

    assert to_file.returncode == 1
    assert "Error: cannot write /dev/full: No space left on device" in to_file.stderr
    assert to_stdout.returncode == 1
    assert "Error: cannot write standard output: No space left on device" in to_stdout.stderr
    assert "unreachable" not in to_file.stderr + to_stdout.stderr
