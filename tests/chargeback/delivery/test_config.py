"""``report.delivery:`` in the agent's config: every bad key named with its path,
secrets only from files, addresses that could forge a header refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuledger.agent.config import ConfigError, load_config

GOOD = """\
report:
  delivery:
    smtp:
      host: smtp.example.com
      from: gpuledger@example.com
      username: reporter
      password_file: /run/secrets/smtp-password
    recipients:
      finance: [cfo@example.com]
      cost_centers:
        ml-platform: [ml-lead@example.com]
    webhook:
      url_file: /run/secrets/slack-webhook
    retry:
      attempts: 4
"""


def test_a_full_section_loads(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD), environ={})
    d = cfg.report.delivery
    assert d is not None
    assert d.smtp is not None
    assert (d.smtp.security, d.smtp.effective_port(), d.smtp.from_) == (
        "starttls",
        587,
        "gpuledger@example.com",
    )
    assert d.recipients.cost_centers == {"ml-platform": ("ml-lead@example.com",)}
    assert d.retry.attempts == 4


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gpuledger.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("      username: reporter\n", "      pasword: hunter2\n      username: reporter\n",
         "report.delivery.smtp.pasword"),
        ("      password_file: /run/secrets/smtp-password\n", "      password: hunter2\n",
         "report.delivery.smtp.password"),
        ("      finance: [cfo@example.com]\n",
         '      finance: ["cfo@example.com\\r\\nBcc: all@example.com"]\n',
         "report.delivery.recipients.finance"),
        ("        ml-platform: [ml-lead@example.com]\n",
         '        "__idle__": [ml-lead@example.com]\n',
         "report.delivery.recipients.cost_centers"),
        ("    retry:\n      attempts: 4\n", "    retry:\n      attempts: 0\n",
         "report.delivery.retry.attempts"),
        ("      url_file: /run/secrets/slack-webhook\n",
         "      url_file: /run/secrets/slack-webhook\n      url: https://hooks.slack.com/x\n",
         "report.delivery.webhook"),
        ("      host: smtp.example.com\n", "      host: smtp.example.com\n      security: ssl\n",
         "report.delivery.smtp.security"),
    ],
)  # fmt: skip
def test_bad_keys_are_named(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, GOOD.replace(old, new)), environ={})
    keys = [k for k, _ in info.value.problems]
    assert key in keys, info.value.problems
    assert "hunter2" not in str(info.value)


def test_a_password_is_never_sent_in_plain_text(tmp_path: Path) -> None:
    text = GOOD.replace("      host: smtp.example.com\n", "      host: h\n      security: none\n")
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    assert "never sent in plain text" in str(info.value)


def test_recipients_without_smtp_are_refused(tmp_path: Path) -> None:
    text = "report:\n  delivery:\n    recipients:\n      finance: [a@example.com]\n"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    assert "no smtp: section" in str(info.value)


def test_the_reporter_refuses_to_start_without_its_secret_files(tmp_path: Path) -> None:
    """A missing mount is found at start, named by its key, not on the 1st of next month."""
    from gpuledger.agent.preflight import check_delivery_secrets

    webhook = tmp_path / "slack-webhook"
    webhook.write_text("not a url\n", encoding="utf-8")
    text = GOOD.replace("/run/secrets/slack-webhook", str(webhook)).replace(
        "/run/secrets/smtp-password", str(tmp_path / "absent")
    )
    cfg = load_config(_write(tmp_path, "roles: [reporter]\n" + text), environ={})
    with pytest.raises(ConfigError) as info:
        check_delivery_secrets(cfg)
    assert info.value.problems == [
        (
            "report.delivery.smtp.password_file",
            f"cannot read {tmp_path / 'absent'}: No such file or directory",
        ),
        ("report.delivery.webhook.url_file", f"{webhook} holds no http(s) URL"),
    ]
    (tmp_path / "absent").write_text("pw\n", encoding="utf-8")
    webhook.write_text("https://hooks.example.com/services/T/B/x\n", encoding="utf-8")
    check_delivery_secrets(cfg)  # both readable now: no error


def test_a_secret_path_can_come_from_the_environment(tmp_path: Path) -> None:
    """systemd passes a credential's path as a variable (docs/deploy.md): the keys of the
    optional delivery section are settable one by one, like every other section's."""
    text = GOOD.replace("      password_file: /run/secrets/smtp-password\n", "")
    env = {"GPULEDGER_REPORT__DELIVERY__SMTP__PASSWORD_FILE": "/run/credentials/g/smtp-password"}
    cfg = load_config(_write(tmp_path, text), environ=env)
    assert cfg.report.delivery is not None
    assert cfg.report.delivery.smtp is not None
    assert str(cfg.report.delivery.smtp.password_file) == "/run/credentials/g/smtp-password"
    with pytest.raises(ConfigError) as info:
        load_config(
            _write(tmp_path, text), environ={"GPULEDGER_REPORT__DELIVERY__SMTP__PASWORD": "x"}
        )
    assert info.value.problems == [("GPULEDGER_REPORT__DELIVERY__SMTP__PASWORD", "no such setting")]
