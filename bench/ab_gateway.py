"""A/B of gptactions versions on `POST /api/v1/gpt/conversations`, interleaved in one run.

This machine's speed drifts by 10-15% from one minute to the next, more than most changes are
worth, so two versions measured one after the other cannot be compared. Here every version is
up at once, each on a fresh SQLite database, pointed at the same instant mock upstream
(bench_gateway's), and driven by the same load generator in turn: `--rounds` rounds of
`--round-seconds` at each concurrency, the order reversed every other round. A server between
its rounds is idle, so the alternation cancels the drift. Printed per version and concurrency:
requests/s over all the rounds, the median of the rounds' p50s, and each version's ratio to
the first (with its range by round).

A version is `NAME=SOURCE[:KEY=VALUE,...]`: SOURCE is a checkout (its `src` goes first on
PYTHONPATH; make one with `git worktree add /tmp/base HEAD~1`) or `.` for this one; KEY=VALUE
are settings (`sqlite_writer=thread` is GPTACTIONS_SQLITE_WRITER=thread). For example:

    .venv/bin/python bench/ab_gateway.py base=/tmp/base new=. --c 1 32 --rounds 6
    .venv/bin/python bench/ab_gateway.py full=. normal=.:sqlite_synchronous=NORMAL

Only the versions' own code differs: they share this environment's packages.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench_gateway import CONVERSATIONS, CONVERSE, Load, _measure, mock_settings, own_server
from common import BENCH_KEY, ROOT, ratio, server_process


@dataclass
class Version:
    name: str
    source: Path
    settings: dict[str, str]
    loads: dict[int, list[Load]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Version:
        name, _, rest = text.partition("=")
        source, _, pairs = rest.partition(":")
        if not name or not source:
            raise argparse.ArgumentTypeError(f"expected NAME=SOURCE[:KEY=VALUE,...], got {text!r}")
        path = ROOT if source == "." else Path(source).resolve()
        if not (path / "src" / "gptactions").is_dir():
            raise argparse.ArgumentTypeError(f"{path} is not a gptactions checkout")
        settings = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        return cls(name, path, settings)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("versions", nargs="+", type=Version.parse, metavar="NAME=SOURCE[:K=V,...]")
    parser.add_argument("--c", type=int, nargs="+", default=[1, 32], help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--round-seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    versions: list[Version] = args.versions
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    with (
        tempfile.TemporaryDirectory() as directory,
        own_server("the mock upstream", "--serve-mock") as mock_url,
        contextlib.ExitStack() as stack,
    ):
        upstream = mock_settings(mock_url)
        urls = {}
        for version in versions:
            database = f"sqlite:///{directory}/{version.name}.db"
            started = server_process(
                database,
                name=version.name,
                source=version.source,
                workers=str(args.workers),
                **upstream,
                **version.settings,
            )
            url, _ = stack.enter_context(started)
            urls[version.name] = url
            _measure(url, CONVERSATIONS, CONVERSE, headers, max(args.c), 1.0)  # the warm-up
        for c in args.c:
            for index in range(args.rounds):
                order = versions if index % 2 == 0 else versions[::-1]
                for version in order:
                    load = _measure(
                        urls[version.name], CONVERSATIONS, CONVERSE, headers, c, args.round_seconds
                    )
                    version.loads.setdefault(c, []).append(load)
            print(f"c={c}: {args.rounds} rounds done", file=sys.stderr)
    reference = versions[0]
    for c in args.c:
        print(f"c={c}, {args.rounds} rounds of {args.round_seconds:g} s, {args.workers} worker(s):")
        for version in versions:
            loads = version.loads[c]
            rps = _mean_rps(loads)
            p50 = statistics.median(load.p50_ms for load in loads)
            line = f"  {version.name:>12}: {rps:9.1f} req/s  p50 {p50:6.2f} ms"
            if version is not reference:
                by_round = [
                    ratio(mine.rps, theirs.rps)
                    for mine, theirs in zip(loads, reference.loads[c], strict=True)
                ]
                line += (
                    f"  x{reference.name} {ratio(rps, _mean_rps(reference.loads[c]))} "
                    f"(by round {min(by_round)}-{max(by_round)}, "
                    f"{sum(r > 1 for r in by_round)} of {len(by_round)} faster)"
                )
            print(line)


def _mean_rps(loads: list[Load]) -> float:
    """Requests/s over the rounds (each round lasts as long)."""
    return sum(load.rps for load in loads) / len(loads)


if __name__ == "__main__":
    main()
