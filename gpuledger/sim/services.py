"""The simulated fleet's services: who runs on the simulated GPUs, and how hard.

:class:`~gpuledger.sim.node.SimulatedNode` places them: the default node by role (most
GPUs serve a tensor-parallel chat model; then an MPS GPU, a batch GPU, a time-sliced GPU
and two MIG GPUs, :meth:`~gpuledger.sim.node.SimulatedNode.roles`), a node given a
``layout`` by that layout, one replica per GPU. :data:`FINDINGS_LAYOUT` is such a node:
eight A100 80GB GPUs laid out so the month's report has one case of each finding a
platform team acts on (``docs/findings.md``, "In the demo"), and one bursty service that
must not be told to shrink.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadProfile:
    """A service's demand: ``base + amplitude * cos(2 pi (hour - peak) / 24)``, x0.7 at
    weekends, plus noise; clamped to 0..1.

    ``burst`` > 0 makes the daily swing a burst instead of a wave:
    ``base + amplitude * max(0, cos(...)) ** burst`` (at 16, about two hours a day above
    half the amplitude, and ``base`` the rest of the day): a job that saturates its GPUs
    for a short window and idles otherwise, whose mean says nothing about its peaks."""

    base: float
    amplitude: float
    peak_hour_utc: float
    burst: float = 0.0


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    service: str
    load: LoadProfile
    memory_fraction: float  # of its device's memory (vLLM's gpu_memory_utilization)


MIG_LAYOUTS: dict[str, tuple[tuple[tuple[str, int], ...], ...]] = {
    # (profile, GPU-instance id): A leaves one compute slice unallocated, B uses all 7.
    "NVIDIA H100 80GB HBM3": (
        (("3g.40gb", 2), ("1g.10gb", 7), ("1g.10gb", 8), ("1g.10gb", 9)),
        (("4g.40gb", 1), ("2g.20gb", 5), ("1g.10gb", 13)),
    ),
    "NVIDIA A100-SXM4-80GB": (
        (("3g.40gb", 2), ("1g.10gb", 7), ("1g.10gb", 8), ("1g.10gb", 9)),
        (("4g.40gb", 1), ("2g.20gb", 5), ("1g.10gb", 13)),
    ),
    "NVIDIA A100-SXM4-40GB": (
        (("3g.20gb", 2), ("1g.5gb", 7), ("1g.5gb", 8), ("1g.5gb", 9)),
        (("4g.20gb", 1), ("2g.10gb", 5), ("1g.5gb", 13)),
    ),
}

CHAT = Service("llm-prod", "chat-llama-70b", LoadProfile(0.62, 0.25, 15.0), 0.90)
BATCH = Service("llm-batch", "summarize-mistral-7b", LoadProfile(0.14, 0.06, 3.0), 0.90)
EMBED = Service("search", "embed-bge-m3", LoadProfile(0.34, 0.18, 14.0), 0.42)
RERANK = Service("search", "rerank-bge-v2", LoadProfile(0.28, 0.16, 16.0), 0.46)
CODE = Service("llm-prod", "code-qwen-14b", LoadProfile(0.48, 0.30, 14.0), 0.90)
GUARD = Service("safety", "guard-llama-8b", LoadProfile(0.30, 0.15, 15.0), 0.90)
CLASSIFY = Service("search", "classify-deberta", LoadProfile(0.22, 0.10, 12.0), 0.60)
RAG = Service("llm-prod", "rag-llama-8b", LoadProfile(0.50, 0.25, 15.0), 0.90)
E5 = Service("search", "embed-e5-large", LoadProfile(0.30, 0.15, 13.0), 0.80)
# an MPS GPU: three clients in three pods, through one nvidia-cuda-mps-server (sim/mps.py)
MPS_CLIENTS = (
    Service("search", "ocr-paddle", LoadProfile(0.20, 0.10, 11.0), 0.20),
    Service("llm-prod", "asr-whisper", LoadProfile(0.26, 0.12, 14.0), 0.25),
    Service("safety", "moderate-toxic-bert", LoadProfile(0.15, 0.08, 16.0), 0.15),
)
MIG_SERVICES: tuple[tuple[Service | None, ...], ...] = (
    (CODE, GUARD, CLASSIFY, None),  # layout A; the last 1g instance stays empty
    (RAG, E5, GUARD),  # layout B
)

# --- the findings node (FINDINGS_LAYOUT) --------------------------------------------------
SUPPORT = Service("llm-prod", "support-qwen-7b", LoadProfile(0.08, 0.03, 15.0), 0.90)
"""Four vLLM replicas sized for a launch whose traffic never came: each GPU about 7 % busy
on average, the four together under 0.6 busy GPUs in nearly every hour, so one GPU at 60 %
would serve them (over-provisioned). vLLM takes 90 % of each
GPU's memory whatever the model's size, so no smaller class or MIG profile is offered."""

DIGEST = Service("analytics", "digest-llama-8b", LoadProfile(0.10, 0.95, 6.5, burst=16), 0.90)
"""Two vLLM replicas that write the morning digests: saturated for about two hours a day
around 06:30 UTC, 10 % busy otherwise. Its mean (about a quarter of a GPU) would fit one
GPU; its p95 hour needs both, so no finding (the bursty case the percentile protects)."""

TRANSCRIBE = Service("media", "transcribe-whisper", LoadProfile(0.14, 0.03, 13.0), 0.30)
"""A Whisper server holding a whole A100 80GB for 24 GiB, 10-20 % busy: a MIG 3g.40gb
instance holds it (the smallest profile with the memory, 3/7 of the SMs), freeing half the
GPU. Its quietest hours stay above 1 % busy, so it is never a zombie."""

WholeGpu = tuple[Service, ...]
"""The services on one whole GPU of a laid-out node, one process (pod) each; () = spare."""

FINDINGS_LAYOUT: tuple[WholeGpu, ...] = (
    *((SUPPORT,),) * 4,
    (DIGEST,),
    (DIGEST,),
    (TRANSCRIBE,),
    (),  # a spare GPU nobody is given all month (idle capacity)
)
"""The findings node's eight GPUs (``gpu-node-03`` in the demo fleet, A100 80GB)."""
