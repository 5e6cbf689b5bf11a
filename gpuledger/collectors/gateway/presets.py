"""What each supported gateway exposes, from its upstream source (cited with file paths in
docs/upstream-gateways.md; the fixture pages under tests/support/fixtures/gateways/ are
printed from the same definitions):

- **LiteLLM proxy** (``litellm/integrations/prometheus.py``, label lists in
  ``litellm/types/integrations/prometheus.py``): counters ``litellm_input_tokens_metric``
  / ``litellm_output_tokens_metric`` / ``litellm_requests_metric`` (older releases named
  the token counters ``litellm_input_tokens`` / ``litellm_output_tokens``), exposed with
  ``_total``; labels ``end_user, hashed_api_key, api_key_alias, model, team, team_alias,
  user, requested_model``; an unset label is the string ``None``. LiteLLM has no
  prompt-cache token counter (``litellm_cached_tokens_metric`` is its response cache).
- **Envoy AI Gateway** (``internal/metrics/genai.go``): the OpenTelemetry histogram
  ``gen_ai.client.token.usage`` exported to Prometheus as ``gen_ai_client_token_usage``
  with ``gen_ai_token_type`` = ``input`` / ``cached_input`` / ``output``; the ``_sum`` per
  type is the counter, the ``_count`` of ``input`` the requests. The model is
  ``gen_ai_request_model``; a tenant exists only where the operator maps a request header
  to an attribute (``controller.metricsRequestHeaderAttributes=x-user-id:user.id`` →
  label ``user_id``).
- **gpuledger meter**: the shared contract (``gpuledger_meter_*_total`` labelled
  ``service, namespace, model_name, tenant``); the page already speaks gpuledger's names.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuledger.collectors.gateway.config import GatewayMetrics, MetricRef, Preset


@dataclass(frozen=True, slots=True)
class PresetSpec:
    metrics: GatewayMetrics
    tenant_labels: tuple[str, ...]
    model_label: str
    empty_values: tuple[str, ...] = ("",)
    service_label: str | None = None
    namespace_label: str | None = None


def _ref(*names: str) -> MetricRef:
    return MetricRef(names=names)


def _genai(sample: str, of_type: str) -> MetricRef:
    """An Envoy AI Gateway token-usage sample of one ``gen_ai_token_type``."""
    return MetricRef(names=(sample,), match={"gen_ai_token_type": of_type})


_ENVOY_SUM = "gen_ai_client_token_usage_sum"
_ENVOY_COUNT = "gen_ai_client_token_usage_count"

PRESETS: dict[Preset, PresetSpec] = {
    "litellm": PresetSpec(
        metrics=GatewayMetrics(
            requests=_ref("litellm_requests_metric_total"),
            prompt=_ref("litellm_input_tokens_metric_total", "litellm_input_tokens_total"),
            generation=_ref("litellm_output_tokens_metric_total", "litellm_output_tokens_total"),
        ),
        tenant_labels=("team_alias", "api_key_alias"),
        model_label="model",
        empty_values=("", "None"),
    ),
    "envoy-ai-gateway": PresetSpec(
        metrics=GatewayMetrics(
            requests=_genai(_ENVOY_COUNT, "input"),
            prompt=_genai(_ENVOY_SUM, "input"),
            cached_prompt=_genai(_ENVOY_SUM, "cached_input"),
            generation=_genai(_ENVOY_SUM, "output"),
        ),
        tenant_labels=("user_id",),
        model_label="gen_ai_request_model",
    ),
    "gpuledger-meter": PresetSpec(
        metrics=GatewayMetrics(
            requests=_ref("gpuledger_meter_requests_total"),
            prompt=_ref("gpuledger_meter_prompt_tokens_total"),
            cached_prompt=_ref("gpuledger_meter_cached_prompt_tokens_total"),
            generation=_ref("gpuledger_meter_generation_tokens_total"),
        ),
        tenant_labels=("tenant",),
        model_label="model_name",
        service_label="service",
        namespace_label="namespace",
    ),
}
