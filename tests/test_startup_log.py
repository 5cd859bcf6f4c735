"""What `gptactions serve` logs as it starts and stops, read as an operator reads it: each fact
once, "serving on" once the port listens, every line naming its logger and, with several
workers, the worker it comes from; a settings error is the command's `Error:`, not a log line."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gptactions.workers import supported
from tests.serving import free_port, stop

README = (Path(__file__).parents[1] / "README.md").read_text()
# A timestamp, the level, a worker's tag (with several), the logger: `… INFO:     uvicorn: …`.
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 [A-Z]+: +(\[worker (?P<worker>\d+)\] )?"
    r"(?P<logger>[a-z_.]+): "
)


@dataclass(frozen=True)
class Start:
    """A start of the server, stopped with SIGTERM once it said it serves."""

    lines: list[str]  # its standard error, all of it
    healthy_when_serving: bool  # /healthz answered 200 the moment it said "serving on"

    def index(self, text: str) -> int:
        """The first line holding `text`."""
        return next(number for number, line in enumerate(self.lines) if text in line)

    def count(self, text: str) -> int:
        """How many lines hold `text`."""
        return sum(text in line for line in self.lines)


def start_and_stop(directory: Path, *, workers: int = 1, key: str | None = None) -> Start:
    """`gptactions serve` in `directory` (its own database; `key` as GPTACTIONS_API_KEY, or
    none), until it says it serves; then SIGTERM, and all it wrote on standard error."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")} | {
        "GPTACTIONS_PORT": str(port),
        "GPTACTIONS_WORKERS": str(workers),
        "GPTACTIONS_DATABASE_URL": f"sqlite:///{directory / 'server.db'}",
        "GPTACTIONS_MODEL_THREADS": "1",  # as tests/serving.py: the test runs share the cores
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }
    if key is not None:
        environment["GPTACTIONS_API_KEY"] = key
    process = subprocess.Popen(
        [sys.executable, "-m", "gptactions", "serve"],
        cwd=directory,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = process.stderr
    assert stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()  # None: the process closed it

    def read() -> None:
        for line in stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    healthy = False
    try:
        deadline = time.monotonic() + 300
        while (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            seen.append(line)
            if " serving on " in line:
                healthy = _healthy(port)
                break
        else:
            pytest.fail("exited before serving:\n" + "\n".join(seen))
    finally:
        stop(process, timeout=60)
        reader.join(timeout=10)
        stderr.close()
    while not lines.empty() and (line := lines.get()) is not None:
        seen.append(line)
    return Start(seen, healthy)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def test_each_start_says_once_what_it_did_and_serving_once_it_listens(isolated: Path) -> None:
    first = start_and_stop(isolated)
    assert first.healthy_when_serving, "serving on was logged before the server answered"
    assert first.count("created the database") == 1
    assert first.count("revision") == 1  # not again as "already at revision" by the server
    assert first.count("created an admin key") == 1
    assert first.count("created no key") == 0
    # Said when it is true: "starting" before the server process, "serving" once it listens.
    assert first.count(" starting on http://127.0.0.1:") == 1
    assert first.index(" starting on ") < first.index("Started server process")
    assert first.index("Application startup complete") < first.index(" serving on ")
    assert first.count(" serving on ") == 1 and first.count("Uvicorn running on") == 0

    again = start_and_stop(isolated)
    assert again.healthy_when_serving
    assert again.count("already at revision") == 1 and again.count("created the database") == 0
    assert again.count("keys exist and GPTACTIONS_API_KEY is unset: created no key") == 1
    # Every line names its logger, uvicorn's too; one process names no worker.
    loggers = [match["logger"] for line in again.lines if (match := LINE.match(line))]
    assert len(loggers) == len(again.lines) and "uvicorn" in loggers
    assert not any("[worker " in line for line in again.lines)


def test_an_imported_key_is_said_once_found_or_imported(isolated: Path) -> None:
    key = "gpta_" + "k" * 40
    first = start_and_stop(isolated, key=key)
    assert first.count("imported GPTACTIONS_API_KEY as admin key") == 1
    again = start_and_stop(isolated, key=key)
    assert again.count("found GPTACTIONS_API_KEY's key") == 1
    assert again.count("imported GPTACTIONS_API_KEY") == 0
    assert not any(key in line for line in first.lines + again.lines)


@pytest.mark.skipif(not supported(), reason="needs SO_REUSEPORT (Linux, the BSDs)")
def test_several_workers_name_themselves_and_say_each_fact_once(isolated: Path) -> None:
    start = start_and_stop(isolated, workers=2)
    assert start.healthy_when_serving
    assert [line for line in start.lines if not LINE.match(line)] == []
    pids = {
        int(pid) for line in start.lines for pid in re.findall(r"started worker \[(\d+)\]", line)
    }
    assert len(pids) == 2
    tagged = [match for line in start.lines if (match := LINE.match(line)) and match["worker"]]
    assert {int(match["worker"]) for match in tagged} == pids
    # Whatever runs in a worker names it, uvicorn's lines as ours; `serve` and the supervisor
    # (`gptactions.workers`) do not.
    first_worker = start.index("started worker [")
    for number, line in enumerate(start.lines):
        match = LINE.match(line)
        assert match is not None
        inside = number > first_worker and match["logger"] != "gptactions.workers"
        assert bool(match["worker"]) == inside, line
    stopping = [
        match for line in start.lines if "stopping: " in line and (match := LINE.match(line))
    ]
    assert len(stopping) == 2 and {int(match["worker"]) for match in stopping} == pids
    # Said once for the start, not once more by each worker's start-up.
    assert start.count("created the database") == 1 and start.count("revision") == 1
    assert start.count("admin key") == 1 and start.count("created no key") == 0
    # "serving on" once, when both workers listen.
    (serving,) = [number for number, line in enumerate(start.lines) if " serving on " in line]
    assert start.lines[serving].endswith("/ with 2 workers")
    complete = [n for n, line in enumerate(start.lines) if "Application startup complete" in line]
    assert len(complete) == 2 and max(complete) < serving
    assert start.count(" with 2 workers") == 2  # "starting on … with 2 workers" too


def test_a_settings_error_is_the_commands_error_not_a_log_line(isolated: Path) -> None:
    """Before logging starts (its level is a setting): click's `Error:` on standard error, exit
    status 1, as for every command; README's GPTACTIONS_LOG_LEVEL row says so."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPTACTIONS_")}
    result = subprocess.run(
        [sys.executable, "-m", "gptactions", "serve"],
        cwd=isolated,
        env=environment | {"GPTACTIONS_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines()[0] == "Error: invalid settings (environment or .env):"
    assert "GPTACTIONS_PORT" in result.stderr.splitlines()[1]
    (row,) = [line for line in README.splitlines() if line.startswith("| `GPTACTIONS_LOG_LEVEL`")]
    assert "is a command-line error, not a log line: `Error: …` on standard error" in row
    assert "`[worker <pid>]`" in row and "serving on" in row
