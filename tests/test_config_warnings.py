"""What a starting server says about its settings: typo'd variables and unsafe production ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gptactions.config import Settings, describe_invalid_settings
from gptactions.config_warnings import (
    inline_comments,
    setting_names,
    settings_warnings,
    unknown_variables,
    unsafe_in_production,
)


def test_a_typo_is_named_with_the_setting_it_meant() -> None:
    messages = unknown_variables(
        {"GPTACTIONS_LOG_RETENTON": "1d", "GPTACTIONS_PORT": "8000", "PATH": "/bin"}
    )
    assert messages == [
        "GPTACTIONS_LOG_RETENTON in the environment is not a setting and is ignored "
        "(did you mean GPTACTIONS_LOG_RETENTION?)"
    ]


def test_a_name_far_from_every_setting_gets_no_guess() -> None:
    (message,) = unknown_variables({"GPTACTIONS_FLUX_CAPACITOR": "1"})
    assert "did you mean" not in message


def test_every_setting_and_nothing_else_is_known() -> None:
    assert not unknown_variables({name: "x" for name in setting_names()})
    assert "GPTACTIONS_DATABASE_URL" in setting_names()


def test_the_dotenv_file_is_read_too(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("GPTACTIONS_ENVIROMENT=production\nGPTACTIONS_PORT=9000\nOTHER=1\n")
    (message,) = unknown_variables({}, dotenv)
    assert message.startswith(f"GPTACTIONS_ENVIROMENT in {dotenv} is not a setting")
    assert "GPTACTIONS_ENVIRONMENT?" in message


def test_development_says_nothing_about_production_settings() -> None:
    assert unsafe_in_production(Settings(cors_origins=["*"])) == []


def test_production_names_each_unsafe_setting() -> None:
    settings = Settings(
        environment="production",
        cors_origins=["*"],
        trusted_proxies=["0.0.0.0/0"],
        public_url="http://gpt.example.com",
        sqlite_synchronous="off",
    )
    named = [message.split(" ")[0].split("=")[0] for message in unsafe_in_production(settings)]
    assert named == [
        "GPTACTIONS_METRICS_TOKEN",
        "GPTACTIONS_CORS_ORIGINS",
        "GPTACTIONS_TRUSTED_PROXIES",
        "GPTACTIONS_PUBLIC_URL",
        "GPTACTIONS_SQLITE_SYNCHRONOUS",
    ]


def test_a_safe_production_server_says_nothing() -> None:
    settings = Settings(
        environment="production",
        metrics_token="s" * 32,
        cors_origins=["https://chat.openai.com"],
        trusted_proxies=["10.0.0.0/8"],
        public_url="https://gpt.example.com",
    )
    assert unsafe_in_production(settings) == []


def test_a_short_admin_key_is_a_settings_error_not_a_traceback() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(api_key="short")
    described = describe_invalid_settings(raised.value)
    assert "GPTACTIONS_API_KEY: an API key must be at least 20 characters long" in described
    assert "short" not in described  # never the value
    assert Settings(api_key="").api_key is None  # empty is no key, as in a compose file


def test_a_secret_that_may_hold_spaces_and_holds_an_inline_comment_is_named() -> None:
    settings = Settings(
        api_key="my-own-admin-key-0123456789  # the ops team's",
        oidc_issuer="https://idp.example",
        oidc_client_id="gptactions",
        oidc_client_secret="s3cr3t #rotated in May",
    )
    messages = inline_comments(settings)
    assert [message.split(" ")[0] for message in messages] == [
        "GPTACTIONS_API_KEY",
        "GPTACTIONS_OIDC_CLIENT_SECRET",
    ]
    assert all("inline comment" in message for message in messages)
    assert set(messages) <= set(settings_warnings(settings, {}))
    assert "ops team" not in " ".join(messages) and "May" not in " ".join(messages)
    # A key chosen by a person may hold spaces: only ` #` is named.
    assert inline_comments(Settings(api_key="correct horse battery staple")) == []
