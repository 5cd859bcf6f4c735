"""Debian's nginx in front of replicas, with docs/nginx.conf.template as its configuration.

nginx runs in the foreground (`daemon off`) with its own prefix, log, pid and temporary files in
a test's directory, on free ports, with a self-signed certificate the test's client trusts.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.serving import free_port, stop

TEMPLATE = Path(__file__).resolve().parents[2] / "docs" / "nginx.conf.template"
# Set by `make test`: there, a missing nginx is a failure, not a skip.
REQUIRED_VARIABLE = "TEST_REQUIRE_NGINX"

# What wraps the template in a test: Debian's /etc/nginx/nginx.conf does the same with its
# `include /etc/nginx/conf.d/*.conf;` inside `http`, with system paths instead of the prefix's.
_MAIN = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{
    worker_connections 512;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/gptactions.conf;
}}
"""


def nginx_binary() -> str | None:
    """Where nginx is installed (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    return found


def render(template: str, values: dict[str, str]) -> str:
    """The template with each `@NAME@` replaced; every placeholder must be given a value."""
    text = template
    for name, value in values.items():
        placeholder = f"@{name}@"
        assert placeholder in text, f"the template has no {placeholder}"
        text = text.replace(placeholder, value)
    left = re.findall(r"@[A-Z0-9_]+@", text)
    assert not left, f"placeholders without a value: {left}"
    return text


@dataclass(frozen=True)
class Nginx:
    """A running nginx: its https and http base URLs, how to trust it, its process and log."""

    url: str
    http_url: str
    certificate: Path
    process: subprocess.Popen[bytes]
    log: Path

    def tls(self) -> ssl.SSLContext:
        """A client context that trusts this nginx's certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.certificate))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, made by openssl."""
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(certificate),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return certificate, key


@contextmanager
def run_nginx(binary: str, directory: Path, replicas: list[str]) -> Iterator[Nginx]:
    """nginx in front of two replicas (`host:port`) until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = self_signed_certificate(directory)
    https_port, http_port = free_port(), free_port()
    site = render(
        TEMPLATE.read_text(),
        {
            "REPLICA_1": replicas[0],
            "REPLICA_2": replicas[1],
            "HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "HTTPS_LISTEN": f"127.0.0.1:{https_port}",
            "SERVER_NAME": "localhost",
            "CERTIFICATE": str(certificate),
            "CERTIFICATE_KEY": str(key),
        },
    )
    (directory / "gptactions.conf").write_text(site)
    main, log = _main_configuration(directory)
    command = [binary, "-p", str(directory), "-c", str(main), "-e", str(log)]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, f"nginx refuses the configuration:\n{check.stderr}"
    output = (directory / "nginx.out").open("wb")
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    nginx = Nginx(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", certificate,
                  process, log)  # fmt: skip
    try:
        _wait_until_it_proxies(nginx.url, process, log, verify=nginx.tls())
        yield nginx
    finally:
        stop(process)
        output.close()


def _main_configuration(directory: Path) -> tuple[Path, Path]:
    """nginx's main configuration in `directory` (including its `*.conf` sites), and where its
    error log goes."""
    # Workers of a master started by root run as `nobody` by default, who cannot enter the
    # test's directory.
    user = "user root;" if os.geteuid() == 0 else ""
    main = directory / "nginx.conf"
    main.write_text(_MAIN.format(prefix=directory, user=user))
    return main, directory / "error.log"


def _wait_until_it_proxies(
    base: str,
    process: subprocess.Popen[bytes],
    log: Path,
    *,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 30,
) -> None:
    """Until nginx at `base` answers `/healthz` with a replica's 200; its log if it cannot."""
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=verify, timeout=5) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {log.read_text(errors='replace')}")
            try:
                if client.get(f"{base}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not proxy: {log.read_text(errors='replace')}")
            time.sleep(0.1)


_PREFIXED_SITE = """\
server {{
    listen 127.0.0.1:{port};
    location {prefix}/ {{
        proxy_pass http://{upstream}/;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Prefix {prefix};
        proxy_buffering off;
    }}
}}
"""


@contextmanager
def run_prefixed(binary: str, directory: Path, upstream: str, prefix: str) -> Iterator[str]:
    """Plain-http nginx serving `upstream` (`host:port`) under the path `prefix` (`/gpt`), with
    `X-Forwarded-Prefix`; yields the prefixed base URL (`http://127.0.0.1:PORT/gpt`)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (directory / "gptactions.conf").write_text(
        _PREFIXED_SITE.format(port=port, prefix=prefix, upstream=upstream)
    )
    main, log = _main_configuration(directory)
    output = (directory / "nginx.out").open("wb")
    command = [binary, "-p", str(directory), "-c", str(main), "-e", str(log)]
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}{prefix}"
    try:
        _wait_until_it_proxies(base, process, log)
        yield base
    finally:
        stop(process)
        output.close()
