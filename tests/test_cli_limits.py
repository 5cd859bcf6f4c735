"""`gptactions keys create --rate-limit --token-limit`, and the limits in `keys list`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_cli import gptactions


def test_a_keys_own_limits_are_stored_and_listed(isolated: Path) -> None:
    created = gptactions(
        "keys",
        "create",
        "--name",
        "partner",
        "--rate-limit",
        "60/minute",
        "--token-limit",
        "100000/days",
        cwd=isolated,
    )
    assert created.returncode == 0, created.stderr
    assert "60/minute" in created.stderr and "100000/day" in created.stderr
    plain = gptactions("keys", "create", "--name", "plain", cwd=isolated)
    assert plain.returncode == 0, plain.stderr

    listed = gptactions("keys", "list", cwd=isolated)
    as_json = json.loads(gptactions("keys", "list", "--json", cwd=isolated).stdout)

    header, *rows = listed.stdout.splitlines()
    assert "RATE" in header.split() and "TOKENS" in header.split()
    partner = next(row for row in rows if " partner " in row)
    assert "60/minute" in partner.split() and "100000/day" in partner.split()
    plain_row = next(row for row in rows if " plain " in row)
    assert plain_row.split().count("-") == 3  # the server's limits, and not revoked
    limits = {key["name"]: (key["rateLimit"], key["tokenLimit"]) for key in as_json}
    assert limits == {"partner": ("60/minute", "100000/day"), "plain": (None, None)}


def test_a_bad_limit_is_a_clear_error_and_creates_no_key(isolated: Path) -> None:
    for option, value in (("--rate-limit", "60"), ("--token-limit", "many/day")):
        refused = gptactions("keys", "create", "--name", "x", option, value, cwd=isolated)
        assert refused.returncode == 2, refused.stderr
        what = option.removeprefix("--").replace("-", " ")
        assert f"{what} {value!r} is not a rate" in refused.stderr
        assert "e.g. 60/minute" in refused.stderr
    listed = json.loads(gptactions("keys", "list", "--json", cwd=isolated).stdout)
    assert listed == []
