"""A PostgreSQL URL's libpq TLS options (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), which a
managed database's URL carries: asyncpg takes the mode as `ssl` and the files only inside an SSL
context, which verifies as libpq does."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import make_url

from gptactions.config import Settings, to_async_url
from gptactions.store.db import tls_options


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db.local")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize(
    ("mode", "hostname", "verify"),
    [
        ("verify-full", True, ssl.CERT_REQUIRED),
        ("verify-ca", False, ssl.CERT_REQUIRED),
        ("require", False, ssl.CERT_REQUIRED),  # libpq: a root certificate given is verified
    ],
)
def test_the_tls_files_become_a_context_that_verifies_as_libpq(
    tmp_path: Path, mode: str, hostname: bool, verify: ssl.VerifyMode
) -> None:
    cert, key = _certificate(tmp_path)
    url = to_async_url(
        f"postgresql://app@db.local/gpt?sslmode={mode}&sslrootcert={cert}"
        f"&sslcert={cert}&sslkey={key}&target_session_attrs=read-write"
    )
    given, context = tls_options(url)
    assert context is not None
    assert (context.check_hostname, context.verify_mode) == (hostname, verify)
    # The files left the URL asyncpg is given; what asyncpg takes stayed.
    assert dict(make_url(given).query) == {"target_session_attrs": "read-write"}


def test_require_without_a_root_certificate_verifies_nothing(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    _, context = tls_options(
        to_async_url(f"postgresql://app@db.local/gpt?sslmode=require&sslcert={cert}&sslkey={key}")
    )
    assert context is not None and context.verify_mode == ssl.CERT_NONE


def test_a_url_without_tls_files_is_given_as_it_is() -> None:
    url = to_async_url("postgresql://app@db.local/gpt?sslmode=require")
    assert tls_options(url) == ("postgresql+asyncpg://app@db.local/gpt?ssl=require", None)


def test_the_settings_take_the_tls_files() -> None:
    url = "postgresql://app@db.local/gpt?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert Settings(database_url=url).database_url == url
