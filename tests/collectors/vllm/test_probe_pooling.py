"""Probes beyond completions (issue 16, item 6): embeddings and rerank against a real vLLM
stand-in on 127.0.0.1, what an endpoint serves found by asking, "not applicable" where it
serves nothing a probe checks, and a failing probe still a failure.

The stand-in's token count is one per word (``tests/support/vllm_pooling.py``), so the
expected usage below is counted here from the words sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import openai
import pytest

from gpuledger.collectors.vllm.probe.pooling import RERANK_DOCUMENT
from gpuledger.collectors.vllm.probe.runner import ProbeRunner, run_series
from gpuledger.collectors.vllm.probe.served import NOT_APPLICABLE, not_served, probe_served
from gpuledger.collectors.vllm.probe.validation import validate
from gpuledger.collectors.vllm.types import (
    EndpointScrape,
    ProbeResult,
    ProbeVerdict,
    VllmEndpoint,
    VllmTelemetry,
)
from tests.support.standins import wait_until
from tests.support.vllm_standin import VllmBehaviour, VllmStandIn

EMBED = "BAAI/bge-m3"
RERANK = "BAAI/bge-reranker-v2-m3"
PROMPT = "Count from one to twenty in words:"
PROMPT_TOKENS = 7  # seven words: seven stand-in tokens
DOC_TOKENS = len(RERANK_DOCUMENT.split())  # 5


def _server(model: str, tasks: tuple[str, ...]) -> VllmStandIn:
    return VllmStandIn(VllmBehaviour(served_model=model, tasks=tasks))


@pytest.fixture
def embedder() -> Iterator[VllmStandIn]:
    with _server(EMBED, ("embed",)) as s:
        yield s


@pytest.fixture
def reranker() -> Iterator[VllmStandIn]:
    with _server(RERANK, ("score",)) as s:  # a cross-encoder: score and rerank only
        yield s


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as c:
        yield c


def _ep(server: VllmStandIn) -> VllmEndpoint:
    return VllmEndpoint(url=server.url, service="svc", namespace="search")


def _probe(client: httpx.Client, server: VllmStandIn, **kw: object) -> tuple[ProbeResult, object]:
    args: dict[str, object] = {"model": None, "prompt": PROMPT, "max_tokens": 16, "timeout_s": 5}
    args.update(kw)
    return probe_served(client, _ep(server), **args)  # type: ignore[arg-type]


# -- the stand-in speaks vLLM's formats (the official SDK parses them) ------------------------


def test_standin_embeddings_parse_with_the_openai_sdk(embedder: VllmStandIn) -> None:
    sdk = openai.OpenAI(base_url=embedder.url + "/v1", api_key="unused", max_retries=0)
    out = sdk.embeddings.create(model=EMBED, input=["one two three", "four five"])
    assert out.model == EMBED
    assert [d.index for d in out.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in out.data)
    assert out.usage.prompt_tokens == out.usage.total_tokens == 3 + 2
    with pytest.raises(openai.NotFoundError):  # an embedding model registers no completions
        sdk.completions.create(model=EMBED, prompt="x", max_tokens=2)


def test_standin_rerank_and_score_shapes(reranker: VllmStandIn, client: httpx.Client) -> None:
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        doc = client.post(reranker.url + path, json={
            "model": RERANK, "query": "a b", "documents": ["c", "d e"]}).json()  # fmt: skip
        assert [r["index"] for r in doc["results"]] == [0, 1]
        assert doc["usage"] == {"total_tokens": (2 + 1) + (2 + 2)}
    for path in ("/score", "/v1/score"):
        doc = client.post(reranker.url + path, json={
            "model": RERANK, "text_1": "a b", "text_2": ["c", "d e"]}).json()  # fmt: skip
        assert doc["object"] == "list"
        assert [d["object"] for d in doc["data"]] == ["score", "score"]
        assert doc["usage"]["prompt_tokens"] == 7
    assert client.post(reranker.url + "/v1/embeddings", json={"model": RERANK, "input": "x"}
                       ).status_code == 404  # fmt: skip


# -- probes of embeddings and rerank ------------------------------------------------------------


def test_embeddings_probe(embedder: VllmStandIn, client: httpx.Client) -> None:
    embedder.behaviour.pooling_delay_s = 0.05
    result, kind = _probe(client, embedder, api="embeddings")
    assert kind == "embeddings"
    assert result.ok, result.detail
    assert result.model_name == EMBED  # looked up in /v1/models
    assert (result.prompt_tokens, result.completion_tokens) == (PROMPT_TOKENS, 0)
    assert result.e2e_s is not None
    assert result.e2e_s >= 0.05
    assert result.ttft_s is None
    assert embedder.bodies[-1] == {"model": EMBED, "input": PROMPT, "encoding_format": "float"}


def test_rerank_probe(reranker: VllmStandIn, client: httpx.Client) -> None:
    result, kind = _probe(client, reranker, api="rerank", model=RERANK)
    assert kind == "rerank"
    assert result.ok, result.detail
    # rerank usage has only total_tokens: the query and the document, all prompt
    assert result.prompt_tokens == PROMPT_TOKENS + DOC_TOKENS
    assert result.completion_tokens == 0
    assert reranker.requests["POST /rerank"] == 1


# -- what an endpoint serves, found by asking ---------------------------------------------------


def test_auto_finds_what_each_endpoint_serves(
    embedder: VllmStandIn, reranker: VllmStandIn, client: httpx.Client
) -> None:
    with VllmStandIn() as generator:  # tasks ("generate",)
        result, kind = _probe(client, generator)
        assert (kind, result.ok, result.completion_tokens) == ("completions", True, 16)
        assert generator.requests["POST /v1/embeddings"] == 0
    result, kind = _probe(client, embedder)
    assert (kind, result.ok) == ("embeddings", True)
    assert embedder.requests["POST /v1/completions"] == 1  # asked first: 404
    assert embedder.requests["GET /v1/models"] == 1  # the model looked up once
    result, kind = _probe(client, reranker)
    assert (kind, result.ok, result.prompt_tokens) == ("rerank", True, PROMPT_TOKENS + DOC_TOKENS)
    assert reranker.requests["POST /v1/completions"] == 1
    assert reranker.requests["POST /v1/embeddings"] == 1
    # the kind found goes first next time: one request, no detour
    result, kind = _probe(client, reranker, known="rerank")
    assert kind == "rerank"
    assert reranker.requests["POST /v1/completions"] == 1


def test_endpoint_serving_none_is_not_applicable(client: httpx.Client) -> None:
    with _server("paddle/ocr", ()) as ocr:  # serves /v1/models and /metrics, no probe route
        result, kind = _probe(client, ocr)
    assert kind is None
    assert not result.ok
    assert result.reason == NOT_APPLICABLE
    assert "completions: HTTP 404" in result.detail
    assert "embeddings: HTTP 404" in result.detail
    assert "rerank: HTTP 404" in result.detail


def test_older_vllm_400_does_not_support_is_not_served() -> None:
    ep = VllmEndpoint(url="http://x", service="s")

    def failed(detail: str) -> ProbeResult:
        return ProbeResult(ep, "m", 0.0, ok=False, reason="http_status", detail=detail)

    assert not_served(failed("HTTP 400 from http://x/v1/embeddings: "
                             "The model does not support Embeddings API"))  # fmt: skip
    assert not_served(failed("HTTP 404 from http://x/rerank: Not Found"))
    assert not not_served(failed("HTTP 404 from http://x: The model `m` does not exist."))
    assert not not_served(failed("HTTP 400 from http://x: invalid JSON body"))
    assert not not_served(failed("HTTP 500 from http://x: boom"))


def test_a_failing_probe_is_a_failure_not_not_applicable(
    embedder: VllmStandIn, client: httpx.Client
) -> None:
    embedder.behaviour.status = 500  # every POST fails, /v1/models still answers
    result, kind = _probe(client, embedder)
    assert result.reason == "http_status"
    assert "HTTP 500" in result.detail
    # completions is not registered (404: not served), so embeddings was asked, and its
    # 500 is a failure of the kind the endpoint serves
    assert kind == "embeddings"
    assert embedder.requests["POST /v1/embeddings"] == 1
    assert embedder.requests["POST /rerank"] == 0


# -- the runner: verdicts for pooling probes, nothing recorded where nothing applies -----------


def _telemetry(ep: VllmEndpoint, server: VllmStandIn) -> VllmTelemetry:
    return VllmTelemetry(
        endpoints=(EndpointScrape(endpoint=ep, up=True, series=(server.series(),)),)
    )


def test_runner_validates_an_embedding_service(embedder: VllmStandIn) -> None:
    ep = _ep(embedder)
    current = [_telemetry(ep, embedder)]
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(0.05):
            current[0] = _telemetry(ep, embedder)

    threading.Thread(target=scrape, daemon=True).start()
    verdicts: list[ProbeVerdict] = []
    results: list[ProbeResult] = []
    runner = ProbeRunner(
        lambda: [ep], lambda: current[0], on_result=results.append,
        on_verdict=verdicts.append, poll_s=0.02, validation_timeout_s=3, prompt=PROMPT,
    )  # fmt: skip
    try:
        for w in runner.tick():
            w.join(10)
        assert len(verdicts) == 1
        v = verdicts[0]
        assert v.tokens_counted is True, v.detail
        assert (v.ttft_histogram_moved, v.ttft_agrees) == (None, None)
        assert v.agrees is True
        st = runner.status().endpoints[0]
        assert (st.kind, st.applicable, st.successes) == ("embeddings", True, 1)
    finally:
        stop.set()
        runner.stop()


def test_validation_catches_an_engine_not_counting_pooling_prompts(
    embedder: VllmStandIn, client: httpx.Client
) -> None:
    embedder.behaviour.lie_tokens = True
    before = embedder.series()
    result, _ = _probe(client, embedder, api="embeddings", model=EMBED)
    verdict = validate(result, before, embedder.series(), wall=lambda: 0.0)
    assert verdict.tokens_counted is False
    assert verdict.agrees is False


def test_runner_not_applicable_is_neither_failure_nor_ledger_row() -> None:
    results: list[ProbeResult] = []
    with _server("paddle/ocr", ()) as ocr:
        ep = _ep(ocr)
        runner = ProbeRunner(lambda: [ep], lambda: None, on_result=results.append)
        try:
            for w in runner.tick():
                w.join(10)
            st = runner.status().endpoints[0]
            assert st.applicable is False
            assert st.kind is None
            assert sum(st.failures.values()) == 0
            assert st.successes == 0
            assert results == []  # nothing for the ledger: the service reads "not applicable"
            asked = ocr.requests["POST /v1/completions"]
            assert runner.tick() == []  # not asked again before the recheck interval
            assert ocr.requests["POST /v1/completions"] == asked
            # once the model behind it serves embeddings, the next check finds it
            ocr.behaviour.tasks = ("embed",)
            runner._state[ep.name].recheck_at = 0.0
            for w in runner.tick():
                w.join(10)
            wait_until(lambda: runner.status().endpoints[0].successes == 1, timeout=5)
            assert runner.status().endpoints[0].kind == "embeddings"
            assert [r.ok for r in results] == [True]
        finally:
            runner.stop()


def test_run_series_on_a_reranker(reranker: VllmStandIn) -> None:
    results = run_series(_ep(reranker), n=3, model=None, prompt=PROMPT, api="auto")
    assert [r.ok for r in results] == [True, True, True]
    assert reranker.requests["POST /rerank"] == 3
    assert reranker.requests["POST /v1/completions"] == 1  # asked once, then remembered
