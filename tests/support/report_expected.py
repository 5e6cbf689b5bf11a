"""The monthly report's figures for the ledger of :mod:`tests.support.report_fixtures`,
computed by hand from its stated seconds and joules and the default rate card's YAML
figures (not by the code under test). The report tests and the CLI's end-to-end test
both check against them.
"""

from __future__ import annotations

from tests.support import rates
from tests.support import report_fixtures as fx

CARD = rates.CARD
capacity_rate, energy_rate, rental = rates.capacity_rate, rates.energy_rate, rates.rental
RH, EH = capacity_rate("H100-80GB"), energy_rate("H100-80GB")
RA, EA = capacity_rate("A100-80GB"), energy_rate("A100-80GB")
H = fx.HOURS

# prod/chat: 2700 s on GPU-h1 + 1800 s on GPU-h2 every hour; 1.8 + 0.9 MJ
CHAT_H = (2700 + 1800) * H / 3600
CHAT_KWH = (1.8e6 + 0.9e6) * H / 3.6e6
CHAT_BUSY = (1800 + 900) * H / 3600
CHAT_COST = CHAT_H * RH + CHAT_KWH * EH
# search/embed: 1200 s on GPU-h2 (744 h) + 3600 s on GPU-a1 (100 h)
EMBED_H100_H, EMBED_A100_H = 1200 * H / 3600, 100.0
EMBED_H100_KWH, EMBED_A100_KWH = 0.6e6 * H / 3.6e6, 1.08e6 * 100 / 3.6e6
EMBED_COST = EMBED_H100_H * RH + EMBED_H100_KWH * EH + EMBED_A100_H * RA + EMBED_A100_KWH * EA
UNATTR_COST = H * RH + 0.36e6 * H / 3.6e6 * EH
IDLE_H = (900 + 600) * H / 3600
IDLE_COST = IDLE_H * RH + (0.09e6 + 0.06e6) * H / 3.6e6 * EH
# tokens: the engine's counts minus the probes'
CHAT_PROMPT = (1.0e9 + 2.0e8) - (1.0e5 + 2.0e4)
CHAT_GEN = (2.5e8 + 5.0e7) - (1.5e5 + 5.0e4)
GROQ_70B = next(
    t for t in CARD["token_api"] if t["class"] == "llama-3.1-70b" and t["provider"] == "Groq"
)
CHAT_API = (
    CHAT_PROMPT * GROQ_70B["usd_per_1m_input"] + CHAT_GEN * GROQ_70B["usd_per_1m_output"]
) / 1e6
