"""The ``report.delivery:`` section: who gets the monthly report, and how it is sent.

Secrets come from files only (``password_file``, ``url_file``): a config file is read by
many (reviews, ``kubectl get configmap``, support bundles), a mounted Secret by the
reporter alone, and a rotated Secret is picked up at the next send without a restart.
A Slack-compatible incoming webhook's URL *is* its credential (whoever has it can post),
so it is read from a file too; an inline ``url`` is accepted for a stand-in on a private
network and is never logged or shown (``gpuledger.redact.secret_url``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpuledger.brief import brief
from gpuledger.chargeback.costcenters.config import clean_cost_center

_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}$")
"""RFC 5321 dot-atom local part, ASCII only (an address that needs SMTPUTF8 is refused
here, not by a relay on the 1st of the month)."""


def _address(value: str) -> str:
    """A plain ``local@domain`` address: no display name, no second address, no header
    injection (whitespace and separators are refused, not stripped)."""
    if not _ADDRESS.match(value):
        raise ValueError(f"{brief(value)} is not an e-mail address (local@domain)")
    return value


class SmtpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)  # default: 587 starttls, 465 tls, 25 none
    # starttls: plain connect, then STARTTLS (refused if the server does not offer it);
    # tls: TLS from the first byte (port 465); none: plain text, for a relay on localhost
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_file: Path | None = None  # read at each send; never inline
    from_: str = Field(alias="from")
    ca_file: Path | None = None  # default: the system's trust store
    timeout_s: float = Field(30.0, gt=0, le=600)  # each socket operation

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str) -> str:
        return _address(v)

    @model_validator(mode="after")
    def _credentials(self) -> SmtpConfig:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together (or neither)")
        if self.username is not None and self.security == "none":
            raise ValueError("a password is never sent in plain text: security starttls or tls")
        return self

    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url_file: Path | None = None  # a file holding the incoming webhook's URL (a secret)
    url: str | None = None  # inline: only for a stand-in; never logged or shown
    timeout_s: float = Field(10.0, gt=0, le=120)  # the whole exchange

    @model_validator(mode="after")
    def _one(self) -> WebhookConfig:
        if (self.url_file is None) == (self.url is None):
            raise ValueError("give exactly one of url_file or url")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError("url: not an http(s) URL")
        return self


class RecipientsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    finance: tuple[str, ...] = ()  # each gets the whole report
    cost_centers: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # their lines only

    @field_validator("finance")
    @classmethod
    def _finance(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_address(a) for a in v))

    @field_validator("cost_centers")
    @classmethod
    def _centers(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for name, addresses in v.items():
            if clean_cost_center(name) != name:
                raise ValueError(f"{brief(name)} is not a cost-center name")
            out[name] = tuple(dict.fromkeys(_address(a) for a in addresses))
        return out


class RetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(5, ge=1, le=50)  # per message and run (the hourly pass resumes)
    backoff_base_s: float = Field(30.0, ge=0, le=3600)  # wait before retry k: base * 2**(k-1)
    backoff_max_s: float = Field(900.0, ge=0, le=86400)


class DeliveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    smtp: SmtpConfig | None = None
    recipients: RecipientsConfig = RecipientsConfig()
    webhook: WebhookConfig | None = None
    retry: RetryConfig = RetryConfig()

    @model_validator(mode="after")
    def _something(self) -> DeliveryConfig:
        anyone = bool(self.recipients.finance or self.recipients.cost_centers)
        if anyone and self.smtp is None:
            raise ValueError("recipients are named but there is no smtp: section to send with")
        if self.smtp is not None and not anyone:
            raise ValueError("smtp: is set but recipients name nobody (finance, cost_centers)")
        if self.smtp is None and self.webhook is None:
            raise ValueError("nothing to deliver with: add smtp: + recipients:, or webhook:")
        return self
