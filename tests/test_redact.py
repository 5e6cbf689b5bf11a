"""DSNs and URLs as messages show them: passwords gone, the rest as the user wrote it."""

from __future__ import annotations

import pytest

from gpuledger.redact import hide, redact_dsn, safe_url, secret_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///ledger.db", "sqlite:///ledger.db"),
        ("sqlite:////var/lib/gpuledger/ledger.db", "sqlite:////var/lib/gpuledger/ledger.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://app:s3cret@db:5432/ledger", "postgresql://app:***@db:5432/ledger"),
        (
            "postgresql://app@db/ledger?sslmode=require",
            "postgresql://app@db/ledger?sslmode=require",
        ),
        ("postgresql:///ledger?password=s3cret", "postgresql:///ledger?password=***"),
    ],
)
def test_safe_url_keeps_the_url_and_drops_the_password(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def test_key_value_dsn_password_redacted() -> None:
    assert redact_dsn("host=db password='a b' user=x") == "host=db password=*** user=x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXXsecret", "https://hooks.slack.com/***"),
        ("http://127.0.0.1:8080/hooks/abc?token=s3cret", "http://127.0.0.1:8080/***"),
        ("https://user:pw@chat.example.com/hooks/x", "https://chat.example.com/***"),
        ("not a url", "***"),
        ("http://[::1:80/x", "<unparseable url>"),
    ],
)
def test_secret_url_shows_only_scheme_and_host(url: str, shown: str) -> None:
    """A webhook URL is a credential as a whole: its path (Slack's token) is hidden too."""
    assert secret_url(url) == shown


def test_hide_replaces_each_secret_and_its_quoted_form() -> None:
    assert hide("login failed for p@ss/w0rd (p%40ss%2Fw0rd)", "p@ss/w0rd", None) == (
        "login failed for *** (***)"
    )
