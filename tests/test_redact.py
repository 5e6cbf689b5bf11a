"""DSNs and URLs as messages show them: passwords gone, the rest as the user wrote it."""

from __future__ import annotations

import pytest

from gpuledger.redact import redact_dsn, safe_url


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
