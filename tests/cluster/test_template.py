"""What docs/nginx.conf.template promises about its replicas, read from the file itself (the
rolling restart in test_rolling_restart.py runs it)."""

from __future__ import annotations

import re

from gptactions.config import Settings
from tests.cluster.nginx import TEMPLATE


def _upstream_block() -> str:
    found = re.search(r"^upstream gptactions \{\n(.*?)^\}", TEMPLATE.read_text(), re.M | re.S)
    assert found, "the template has no `upstream gptactions` block"
    return found[1]


def _directives(block: str) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in block.splitlines())
    return [line.rstrip(";") for line in lines if line]


def test_nginx_closes_an_idle_connection_to_a_replica_before_the_replica_does() -> None:
    # Else the replica closes it just as nginx sends a request on it: a POST there is a 502.
    timeouts = [d for d in _directives(_upstream_block()) if d.startswith("keepalive_timeout ")]
    assert len(timeouts) == 1, "the upstream block must bound how long nginx keeps idle ones"
    seconds = float(timeouts[0].split()[1].removesuffix("s"))
    assert seconds < Settings().keepalive_timeout


def test_a_replica_that_refused_a_connection_is_not_left_out() -> None:
    # nginx's default (max_fails=1, fail_timeout=10s) leaves a restarting replica out for 10 s
    # after its last refusal: restarting the next one meanwhile leaves none (a 502 for all).
    servers = [d for d in _directives(_upstream_block()) if d.startswith("server ")]
    assert len(servers) == 2
    assert all("max_fails=0" in server.split() for server in servers), servers
