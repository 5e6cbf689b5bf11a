"""What ``gpuledger manifests`` lets an operator choose (:class:`ManifestOptions`), checked
when it is built so that a bad name fails the command, not the ``kubectl apply``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gpuledger import __version__
from gpuledger.agent.config import AgentConfig
from gpuledger.alerts.config import AlertsConfig
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.ratecard import parse_rate_card
from gpuledger.cluster import DEFAULT_CLUSTER, check_cluster_name

DEFAULT_NAMESPACE = "gpuledger"
DEFAULT_IMAGE = f"ghcr.io/gpuledger/gpuledger:{__version__}"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def _check_label(key: str, value: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"label key {key!r}: the prefix must be a DNS subdomain")
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"label key {key!r}: not a valid label name")
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise ValueError(f"label {key}={value!r}: not a valid label value")


@dataclass(frozen=True)
class ManifestOptions:
    """What ``gpuledger manifests`` lets an operator choose; everything else is fixed.

    ``alerts`` and ``report`` are the config sections that shape the PrometheusRule and
    the reporter (``--config``); ``rate_card_text`` is a custom rate card's YAML, shipped
    in the ConfigMap so the reporter prices with the same card as the CLI did.
    """

    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    # The reporter's image: the Dockerfile's reporter target (the agent's image has no
    # matplotlib). None: the agent's reference with "-reporter" after its tag.
    reporter_image: str | None = None
    runtime_class: str | None = None
    process_attribution: bool = True
    pod_resources: bool = False  # opt-in: the kubelet socket needs the agent to run as root
    dcgm_url: str | None = None
    metrics_require_token: bool = False
    priority_class: str | None = None
    prometheus_labels: tuple[tuple[str, str], ...] = ()
    dashboards_namespace: str | None = None
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    rate_card_text: str | None = None
    # the config's cluster: (issue 18), written into both configs when not the default
    cluster: str = DEFAULT_CLUSTER

    def __post_init__(self) -> None:
        check_cluster_name(self.cluster)
        for what, ns in (("namespace", self.namespace), ("dashboards namespace", self.ns_dash)):
            if len(ns) > 63 or not _DNS_LABEL.fullmatch(ns):
                raise ValueError(f"{what} {ns!r}: must be a DNS label (a-z, 0-9, -)")
        for what, name in (
            ("runtime class", self.runtime_class),
            ("priority class", self.priority_class),
        ):
            if name is not None and (len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name)):
                raise ValueError(f"{what} {name!r}: must be a DNS subdomain")
        if not self.image or any(c.isspace() for c in self.image):
            raise ValueError(f"image {self.image!r}: must be a non-empty image reference")
        if self.reporter_image is not None and (
            not self.reporter_image or any(c.isspace() for c in self.reporter_image)
        ):
            raise ValueError(f"reporter image {self.reporter_image!r}: not an image reference")
        if self.reporter_image is None and "@" in self.image:
            raise ValueError(
                f"image {self.image!r} is pinned by digest: name the reporter's image "
                "(the Dockerfile's reporter target) with --reporter-image"
            )
        if self.dcgm_url is not None and not self.dcgm_url.startswith(("http://", "https://")):
            raise ValueError(f"dcgm URL {self.dcgm_url!r}: must be an http:// or https:// URL")
        for key, value in self.prometheus_labels:
            _check_label(key, value)
        if self.rate_card_text is not None:
            parse_rate_card(self.rate_card_text, "rate card")  # raises RateCardError

    @property
    def reporter_ref(self) -> str:
        """The reporter Deployment's image: ``reporter_image``, else ``REPO:TAG-reporter``
        (how docs/deploy.md tags the ``--target reporter`` build)."""
        if self.reporter_image is not None:
            return self.reporter_image
        repo, sep, tag = self.image.rpartition(":")
        if not sep or "/" in tag:  # no tag (the colon was a registry's port)
            return f"{self.image}:latest-reporter"
        return f"{repo}:{tag}-reporter"

    @classmethod
    def from_config(cls, cfg: AgentConfig, **overrides: Any) -> ManifestOptions:
        """Options shaped by an agent config: its ``alerts:`` and ``report:`` sections, its
        rate card (read now, embedded in the ConfigMap), ``http.metrics_require_token`` and
        its ``cluster``."""
        card = cfg.report.rate_card
        values: dict[str, Any] = {
            "alerts": cfg.alerts,
            "report": cfg.report,
            "rate_card_text": card.read_text(encoding="utf-8") if card is not None else None,
            "metrics_require_token": cfg.http.metrics_require_token,
            "cluster": cfg.cluster,
        }
        if overrides.get("metrics_require_token"):
            overrides["metrics_require_token"] = True
        else:
            overrides.pop("metrics_require_token", None)
        values.update(overrides)
        return cls(**values)

    @property
    def ns_dash(self) -> str:
        return self.dashboards_namespace or self.namespace
