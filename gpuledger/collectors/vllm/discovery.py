"""Which vLLM servers to scrape: a static list from the configuration plus, optionally, the
pods of this node that carry the ``gpuledger.io/vllm-port`` annotation.

The configuration section (``vllm:`` in the agent's YAML) is
:class:`~gpuledger.collectors.vllm.config.VllmConfig`::

    vllm:
      enabled: true
      timeout_seconds: 5
      endpoints:
        - url: http://10.0.0.5:8000
          service: chat
          namespace: llm
          api_key_file: /var/run/secrets/vllm/key   # or api_key_env: VLLM_API_KEY
      discovery:
        enabled: true            # pods annotated gpuledger.io/vllm-port: "8000"

A discovered pod is scraped at ``<scheme>://<pod IP>:<port><path>`` (scheme and path from
the optional ``gpuledger.io/vllm-scheme`` / ``gpuledger.io/vllm-path`` annotations, default
``http`` and ``/metrics``) and named with the attribution rules of
:func:`gpuledger.collectors.workload.pods.service_name`. :class:`EndpointSource` reads API
keys once, at construction (a missing key is a configuration error, reported with the key's name),
and afterwards only reads memory: calling it never touches the network or the disk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

from gpuledger.collectors.vllm.config import VllmConfig, VllmDiscoveryConfig, VllmEndpointConfig
from gpuledger.collectors.vllm.types import VllmEndpoint
from gpuledger.collectors.workload.pods import (
    DEFAULT_LABEL_KEYS,
    PodDirectory,
    PodInfo,
    service_name,
)

__all__ = ["EndpointSource", "endpoint_from_pod"]

log = logging.getLogger(__name__)


def _read_key(index: int, cfg: VllmEndpointConfig) -> str | None:
    where = f"vllm.endpoints[{index}]"
    if cfg.api_key_file is not None:
        try:
            key = cfg.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ValueError(
                f"{where}.api_key_file: cannot read {cfg.api_key_file}: {reason}"
            ) from None
        if not key:
            raise ValueError(f"{where}.api_key_file: {cfg.api_key_file} is empty")
        return key
    if cfg.api_key_env is not None:
        key = os.environ.get(cfg.api_key_env, "").strip()
        if not key:
            raise ValueError(
                f"{where}.api_key_env: environment variable {cfg.api_key_env} is not set or empty"
            )
        return key
    return None


def endpoint_from_pod(
    pod: PodInfo,
    discovery: VllmDiscoveryConfig,
    label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
) -> VllmEndpoint | None:
    """The endpoint an annotated pod declares; ``None`` when it declares none, has no IP
    yet, or its annotations are unusable (a bad port, an unknown scheme)."""
    annotations = pod.annotations
    port_text = annotations.get(discovery.annotation_port)
    if port_text is None:
        return None
    port_text = port_text.strip()
    if not pod.pod_ip:
        return None  # pending: no IP assigned yet
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        log.debug("pod %s/%s: bad vLLM port annotation %r", pod.namespace, pod.name, port_text)
        return None
    scheme = annotations.get(discovery.annotation_scheme, "http").strip().lower() or "http"
    if scheme not in ("http", "https"):
        log.debug("pod %s/%s: bad vLLM scheme annotation %r", pod.namespace, pod.name, scheme)
        return None
    path = annotations.get(discovery.annotation_path, "/metrics").strip() or "/metrics"
    if not path.startswith("/"):
        path = "/" + path
    host = f"[{pod.pod_ip}]" if ":" in pod.pod_ip else pod.pod_ip
    return VllmEndpoint(
        url=f"{scheme}://{host}:{int(port_text)}",
        service=service_name(pod, label_keys),
        namespace=pod.namespace,
        pod=pod.name,
        metrics_path=path,
    )


def _listed_pods(directory: PodDirectory) -> Iterable[PodInfo]:
    """Every pod the directory holds: ``pods()`` on the Kubernetes directory, the ``pods``
    tuple on the static one (the PodDirectory protocol itself has no listing)."""
    listing: Any = getattr(directory, "pods", None)
    if callable(listing):
        listing = listing()
    if listing is None:
        raise TypeError(f"{type(directory).__name__} cannot list its pods")
    return tuple(p for p in listing if isinstance(p, PodInfo))


class EndpointSource:
    """``source()`` → the endpoints to scrape now: static ones first, then discovered pods,
    without duplicates (by metrics URL; the static entry, which may hold a key, wins)."""

    def __init__(
        self,
        config: VllmConfig,
        pods: PodDirectory | None = None,
        label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
        *,
        node_name: str | None = None,
    ) -> None:
        self.config = config
        self.label_keys = tuple(label_keys)
        self.node_name = node_name  # when set, discovered pods must be on this node
        self._pods = pods if config.discovery.enabled else None
        self._static = tuple(
            VllmEndpoint(
                url=cfg.url,
                service=cfg.service,
                namespace=cfg.namespace,
                api_key=_read_key(i, cfg),
                metrics_path=cfg.metrics_path,
            )
            for i, cfg in enumerate(config.endpoints)
        )
        if self._pods is None and config.discovery.enabled:
            raise ValueError("vllm.discovery.enabled needs a pod directory")
        if pods is not None:
            _listed_pods(pods)  # fail now, not at the first collection

    def __call__(self) -> list[VllmEndpoint]:
        out: dict[str, VllmEndpoint] = {}
        for ep in self._static:
            out.setdefault(ep.metrics_url, ep)
        if self._pods is not None:
            discovery = self.config.discovery
            for pod in sorted(_listed_pods(self._pods), key=lambda p: (p.namespace, p.name)):
                if self.node_name and pod.node_name and pod.node_name != self.node_name:
                    continue
                found = endpoint_from_pod(pod, discovery, self.label_keys)
                if found is not None:
                    out.setdefault(found.metrics_url, found)
        return list(out.values())
