"""A small fleet ledger whose every figure is known by hand, for the report tests.

Two nodes over October 2026 (744 h) and a little of September (for the trend):

- ``n1``: GPU ``GPU-h1`` (NVIDIA H100 80GB HBM3), every hour 3600 s observed:
  ``prod/chat`` holds 2700 s (busy 1800 s, 1.8 MJ), ``__idle__`` 900 s (0.09 MJ).
- ``n1``: GPU ``GPU-h2`` (H100, MIG): ``prod/chat`` 1800 s (busy 900 s, 0.9 MJ),
  ``search/embed`` 1200 s (busy 600 s, 0.6 MJ), ``__idle__`` 600 s (0.06 MJ).
- ``n2``: GPU ``GPU-a1`` (NVIDIA A100-SXM4-80GB) observed only the first 100 hours
  (a node outage: coverage shows it): ``search/embed`` 3600 s (busy 1800 s, 1.08 MJ).
- ``n2``: GPU ``GPU-b1`` (NVIDIA B200, not on the default rate card), 744 h:
  ``lab/train`` 3600 s (busy 3600 s, 3.6 MJ).
- ``n2``: GPU ``GPU-u1`` (H100), 744 h: ``__unattributed__`` 3600 s (busy 0, 0.36 MJ).

Tokens (October): ``prod/chat`` serves ``meta-llama/Llama-3.1-70B-Instruct``: prompt
1.2e9 (of which probe 1.2e5), generation 3.0e8 (probe 2.0e5); ``search/embed`` serves
``BAAI/bge-m3`` (no API class): prompt 5e8, generation 0.

Probes (October): ``prod/chat``: 1000 probes, 990 ok, TTFT of probe i = 0.040 + i·1e-5 s
(ok ones), verdicts: the 990 ok ones agree, the 10 failures have none; ``search/embed``: 100 probes,
80 ok (→ probe-failures); ``lab/train``: none.

September 2026: one hour, ``prod/chat`` 3600 s on ``GPU-h1`` (trend point).
"""

from __future__ import annotations

from datetime import UTC, datetime

from gpuledger.chargeback.attribution.claims import IDLE, UNATTRIBUTED
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, ProbeRecord, TokenRow
from gpuledger.chargeback.ledger.tables import UsageRow as U

OCT = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
SEP = int(datetime(2026, 9, 1, tzinfo=UTC).timestamp())
HOURS = 744
A1_HOURS = 100
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
B200 = "NVIDIA B200"
CHAT_MODEL = "meta-llama/Llama-3.1-70B-Instruct"
EMBED_MODEL = "BAAI/bge-m3"


def fill(store: AuditableLedgerStore) -> None:
    """Write the fleet above into a migrated store."""
    for h in range(HOURS):
        hs = OCT + 3600 * h
        usage = [
            U(hs, "n1", "GPU-h1", "prod", "chat", H100, "", 2700.0, 1800.0, 1.8e6),
            U(hs, "n1", "GPU-h1", "", IDLE, H100, "", 900.0, 0.0, 0.09e6),
            U(hs, "n1", "GPU-h2", "prod", "chat", H100, "3g.40gb", 1800.0, 900.0, 0.9e6),
            U(hs, "n1", "GPU-h2", "search", "embed", H100, "2g.20gb", 1200.0, 600.0, 0.6e6),
            U(hs, "n1", "GPU-h2", "", IDLE, H100, "3g.40gb+2g.20gb", 600.0, 0.0, 0.06e6),
            U(hs, "n2", "GPU-b1", "lab", "train", B200, "", 3600.0, 3600.0, 3.6e6),
            U(hs, "n2", "GPU-u1", "", UNATTRIBUTED, H100, "", 3600.0, 0.0, 0.36e6),
        ]
        coverage = [
            CoverageRow(hs, "n1", "GPU-h1", H100, 3600.0),
            CoverageRow(hs, "n1", "GPU-h2", H100, 3600.0),
            CoverageRow(hs, "n2", "GPU-b1", B200, 3600.0),
            CoverageRow(hs, "n2", "GPU-u1", H100, 3600.0),
        ]
        if h < A1_HOURS:
            usage.append(U(hs, "n2", "GPU-a1", "search", "embed", A100, "", 3600.0, 1800.0, 1.08e6))
            coverage.append(CoverageRow(hs, "n2", "GPU-a1", A100, 3600.0))
        store.upsert(usage, coverage)
    store.upsert(
        [U(SEP, "n1", "GPU-h1", "prod", "chat", H100, "", 3600.0, 1000.0, 2.0e6)],
        [CoverageRow(SEP, "n1", "GPU-h1", H100, 3600.0)],
    )
    store.upsert_tokens(
        [
            TokenRow(OCT, "n1", "prod", "chat", CHAT_MODEL, 1.0e9, 2.5e8, 1.0e5, 1.5e5),
            TokenRow(OCT + 3600, "n1", "prod", "chat", CHAT_MODEL, 2.0e8, 5.0e7, 2.0e4, 5.0e4),
            TokenRow(OCT, "n1", "search", "embed", EMBED_MODEL, 5.0e8, 0.0, 0.0, 0.0),
        ]
    )
    probes: list[ProbeRecord] = []
    for i in range(1000):
        ok = i < 990
        probes.append(
            ProbeRecord(
                started_unix=OCT + 60.0 * i,
                node="n1",
                endpoint="http://10.0.0.5:8000",
                namespace="prod",
                service="chat",
                model_name=CHAT_MODEL,
                ok=ok,
                reason=None if ok else "timeout",
                ttft_s=0.040 + i * 1e-5 if ok else None,
                tpot_s=0.012 if ok else None,
                e2e_s=0.25 + i * 1e-4 if ok else None,
                output_tokens_per_s=80.0 if ok else None,
                prompt_tokens=12 if ok else None,
                completion_tokens=16 if ok else None,
                tokens_counted=True if ok else None,
                ttft_histogram_moved=True if ok else None,
                ttft_agrees=True if ok else None,
            )
        )
    for i in range(100):
        ok = i < 80
        probes.append(
            ProbeRecord(
                started_unix=OCT + 60.0 * i + 7,
                node="n1",
                endpoint="http://10.0.0.6:8000",
                namespace="search",
                service="embed",
                model_name=EMBED_MODEL,
                ok=ok,
                reason=None if ok else "http_status",
                ttft_s=0.02 if ok else None,
                tokens_counted=True if ok else None,
            )
        )
    store.upsert_probes(probes)
