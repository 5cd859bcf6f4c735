"""The supervisor's reload (SIGHUP), step by step, on stand-in processes: one slot at a time, the
old worker stopped only once its successor serves, the next started only once it has ended, and a
successor that fails to start ends the reload with the running workers kept. (tests/test_graceful.py
reloads real workers under requests.)"""

from __future__ import annotations

import itertools
import os
import signal
import threading
from dataclasses import dataclass

import pytest

from gptactions import workers
from gptactions.config import Settings
from gptactions.workers import Supervisor, _Worker


@dataclass
class StandIn:
    """What the supervisor reads of a worker process."""

    pid: int
    exitcode: int | None = None


class Reloading:
    """A supervisor of two stand-in workers, the workers it starts, and the signals it sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pids = itertools.count(1001)
        self.sent: list[tuple[int, signal.Signals]] = []
        self.supervisor = Supervisor(Settings(workers=2))
        monkeypatch.setattr(self.supervisor, "_start", self.start)
        monkeypatch.setattr(os, "kill", lambda pid, sig: self.sent.append((pid, sig)))
        self.supervisor._workers = [self.start(), self.start()]

    def start(self) -> _Worker:
        return _Worker(StandIn(next(self.pids)), threading.Event(), 0.0)  # type: ignore[arg-type]

    def step(self) -> None:
        """One turn of the supervisor's loop, as far as a reload goes."""
        supervisor = self.supervisor
        supervisor._retiring = [worker for worker in supervisor._retiring if worker.running]
        supervisor._reload()

    def incoming(self) -> _Worker | None:
        """The reload's worker starting now (read afresh: each step changes it)."""
        return self.supervisor._incoming

    def pids_serving(self) -> list[int]:
        return [worker.process.pid for worker in self.supervisor._workers]  # type: ignore[misc]


def test_a_reload_replaces_one_worker_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    reloading = Reloading(monkeypatch)
    supervisor = reloading.supervisor
    supervisor._on_hangup(signal.SIGHUP, None)
    reloading.step()
    first = reloading.incoming()
    assert first is not None and reloading.pids_serving() == [1001, 1002]
    reloading.step()  # still starting: nothing stops
    assert reloading.sent == []
    first.ready.set()
    reloading.step()
    assert reloading.pids_serving() == [1003, 1002]
    assert reloading.sent == [(1001, signal.SIGTERM)]
    reloading.step()  # 1001 still drains: the next one waits
    assert reloading.incoming() is None
    supervisor._retiring[0].process.exitcode = 0  # type: ignore[misc]
    reloading.step()
    second = reloading.incoming()
    assert second is not None
    second.ready.set()
    reloading.step()
    assert reloading.pids_serving() == [1003, 1004]
    assert reloading.sent == [(1001, signal.SIGTERM), (1002, signal.SIGTERM)]
    supervisor._retiring[0].process.exitcode = 0  # type: ignore[misc]
    reloading.step()
    assert reloading.incoming() is None and supervisor._retiring == []


def test_a_successor_that_fails_to_start_ends_the_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    reloading = Reloading(monkeypatch)
    supervisor = reloading.supervisor
    supervisor._on_hangup(signal.SIGHUP, None)
    reloading.step()
    starting = reloading.incoming()
    assert starting is not None
    starting.process.exitcode = 3  # type: ignore[misc]
    reloading.step()
    reloading.step()
    assert reloading.incoming() is None and supervisor._reloading == []
    assert reloading.pids_serving() == [1001, 1002] and reloading.sent == []


def test_a_stop_during_a_reload_reaches_the_starting_worker_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reloading = Reloading(monkeypatch)
    supervisor = reloading.supervisor
    supervisor._on_hangup(signal.SIGHUP, None)
    reloading.step()
    supervisor._on_signal(signal.SIGTERM, None)
    supervisor._on_signal(signal.SIGTERM, None)  # a second one: the hurry
    assert reloading.sent == [(pid, signal.SIGTERM) for pid in (1001, 1002, 1003)] + [
        (pid, workers.HURRY) for pid in (1001, 1002, 1003)
    ]
