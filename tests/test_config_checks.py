"""Settings that cannot work stop the start with a line naming them: a token holding whitespace
(an env file's inline comment), a Redis that answers and refuses GPTACTIONS_REDIS_URL."""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from gptactions.config import Settings, describe_invalid_settings
from gptactions.llm.fake import FakeBackend
from gptactions.llm.router import BackendRouter
from gptactions.runtime import RedisRefused, Runtime, check_redis
from tests.conftest import REDIS_HOST, REDIS_PORT, redis_reachable
from tests.serving import free_port
from tests.test_cli import gptactions

COMMENTED = "abc123def456   # a long random string"


@pytest.mark.parametrize("name", ["GPTACTIONS_METRICS_TOKEN", "GPTACTIONS_UPSTREAM_API_KEY"])
def test_a_token_with_an_inline_comment_is_a_settings_error(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, COMMENTED)  # as systemd's EnvironmentFile sets it

    with pytest.raises(ValidationError) as raised:
        Settings()

    described = describe_invalid_settings(raised.value)
    assert f"{name}: holds whitespace, which a token never does: an inline comment" in described
    assert "abc123" not in described and "random" not in described  # never the value


def test_a_tokens_surrounding_whitespace_is_dropped_and_empty_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GPTACTIONS_METRICS_TOKEN", "  abc123def456\t")
    monkeypatch.setenv("GPTACTIONS_UPSTREAM_API_KEY", " ")
    settings = Settings()
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == "abc123def456"
    assert settings.upstream_api_key is None


def test_a_backends_api_key_with_whitespace_is_a_settings_error() -> None:
    backend = {"name": "big", "url": "http://gpu:8000/v1", "apiKey": "sk-abc def"}
    with pytest.raises(ValidationError) as raised:
        Settings(backends=[backend])
    assert "GPTACTIONS_BACKENDS[0].apiKey: holds whitespace" in describe_invalid_settings(
        raised.value
    )


# --- Redis ---------------------------------------------------------------------------------------


class _FakeRedis(socketserver.StreamRequestHandler):
    """Answers as a Redis with 16 databases and no user of that password: `SELECT 99` and an
    `AUTH` are refused, the rest accepted."""

    def handle(self) -> None:
        while line := self.rfile.readline():
            args = []
            for _ in range(int(line[1:])):
                length = int(self.rfile.readline()[1:])
                args.append(self.rfile.read(length + 2)[:-2].decode().upper())
            if args[0] == "HELLO" and "AUTH" in args:
                self.wfile.write(b"-WRONGPASS invalid username-password pair\r\n")
            elif args[0] == "HELLO":
                self.wfile.write(b"%1\r\n$5\r\nproto\r\n:3\r\n")
            elif args[0] == "SELECT" and args[1] != "0":
                self.wfile.write(b"-ERR DB index is out of range\r\n")
            elif args[0] == "PING":
                self.wfile.write(b"+PONG\r\n")
            else:
                self.wfile.write(b"+OK\r\n")


@pytest.fixture
def fake_redis() -> Iterator[str]:
    """The `host:port` of a fake Redis, answering in a thread."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _FakeRedis)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "refusal"),
    [("/99", "DB index is out of range"), ("/0", "invalid username-password pair")],
)
async def test_a_redis_that_refuses_the_url_is_a_configuration_error(
    fake_redis: str, path: str, refusal: str
) -> None:
    credentials = "app:secret-password@" if refusal.startswith("invalid") else ""
    url = f"redis://{credentials}{fake_redis}{path}"

    with pytest.raises(RedisRefused) as refused:
        await check_redis(url)

    assert str(refused.value).startswith(
        f"GPTACTIONS_REDIS_URL: Redis at redis://{fake_redis}{path} answers but refuses it "
        f"({refusal}"
    )
    assert "secret-password" not in str(refused.value)
    assert await check_redis(f"redis://{fake_redis}/0")


async def test_an_unreachable_redis_is_still_tolerated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    assert await check_redis(f"redis://127.0.0.1:{free_port()}/0") is False
    assert "is unreachable" in caplog.text


@pytest.mark.skipif(not redis_reachable(), reason="no Redis on 127.0.0.1:6379")
async def test_the_machines_redis_refuses_a_database_number_out_of_range() -> None:
    with pytest.raises(RedisRefused, match="DB index is out of range"):
        await check_redis(f"redis://{REDIS_HOST}:{REDIS_PORT}/99")


async def test_a_runtime_does_not_open_on_a_redis_that_refuses_it(
    settings: Settings, fake_redis: str
) -> None:
    refused = settings.model_copy(update={"redis_url": f"redis://{fake_redis}/99"})
    runtime = Runtime(refused, router=BackendRouter([FakeBackend()]))

    try:
        with pytest.raises(RedisRefused):
            await runtime.open()  # closes what it opened, when it raises
    except BaseException:
        await runtime.close()
        raise


def test_serve_stops_on_a_redis_that_refuses_it_before_any_worker(
    isolated: Path, fake_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def served(settings: Settings) -> None:
        pytest.fail("`gptactions serve` started serving on a Redis that refuses it")

    monkeypatch.setattr("gptactions.workers.run", served)
    environment = {"GPTACTIONS_REDIS_URL": f"redis://{fake_redis}/99"}

    result = gptactions("serve", "--port", "0", cwd=isolated, env=environment)

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"Error: GPTACTIONS_REDIS_URL: Redis at redis://{fake_redis}/99 answers but refuses it "
        "(DB index is out of range)"
    )
