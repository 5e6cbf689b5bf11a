"""The SSE relay, byte by byte, without sockets: hand-written vLLM streams cut at every
possible boundary must come out as the bytes the client would have had without the meter."""

from __future__ import annotations

import pytest

from gpuledger.meter.relay import SseRelay
from gpuledger.meter.usage import Usage

ROLE = b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
TOK1 = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":" a"}}]}\n\n'
TOK2 = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":" b"},"finish_reason":"length"}]}\n\n'  # noqa: E501
USAGE = (
    b'data: {"id":"c1","choices":[],"model":"m","usage":{"prompt_tokens":12,'
    b'"completion_tokens":2,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":5}}}\n\n'
)
DONE = b"data: [DONE]\n\n"
WITH_USAGE = ROLE + TOK1 + TOK2 + USAGE + DONE
WITHOUT_USAGE = ROLE + TOK1 + TOK2 + DONE
EXPECTED = Usage(prompt_tokens=12, cached_prompt_tokens=5, completion_tokens=2, model="m")


def _run(relay: SseRelay, pieces: list[bytes]) -> bytes:
    return b"".join(relay.feed(p) for p in pieces) + relay.finish()


@pytest.mark.parametrize("cut", range(1, len(WITH_USAGE)))
def test_strip_mode_removes_exactly_the_usage_chunk_wherever_the_pieces_split(cut: int) -> None:
    relay = SseRelay(strip_usage=True)
    assert _run(relay, [WITH_USAGE[:cut], WITH_USAGE[cut:]]) == WITHOUT_USAGE
    assert relay.usage == EXPECTED
    assert relay.done


def test_strip_mode_one_byte_at_a_time() -> None:
    relay = SseRelay(strip_usage=True)
    assert _run(relay, [bytes([b]) for b in WITH_USAGE]) == WITHOUT_USAGE
    assert relay.usage == EXPECTED


def test_pass_mode_forwards_each_piece_as_it_came() -> None:
    relay = SseRelay(strip_usage=False)
    pieces = [WITH_USAGE[:7], WITH_USAGE[7:90], WITH_USAGE[90:]]
    assert [relay.feed(p) for p in pieces] == pieces
    assert relay.finish() == b""
    assert relay.usage == EXPECTED


def test_crlf_events_are_split_too() -> None:
    crlf = WITH_USAGE.replace(b"\n\n", b"\r\n\r\n")
    relay = SseRelay(strip_usage=True)
    assert _run(relay, [crlf]) == WITHOUT_USAGE.replace(b"\n\n", b"\r\n\r\n")
    assert relay.usage == EXPECTED


def test_a_cut_stream_keeps_its_partial_event_and_counts_nothing() -> None:
    cut = WITH_USAGE[: len(ROLE) + 20]
    relay = SseRelay(strip_usage=True)
    assert _run(relay, [cut]) == cut
    assert relay.usage is None


def test_malformed_events_are_relayed_and_flagged() -> None:
    bad = ROLE + b'data: {"id":"x","choices":[\n\n' + DONE
    relay = SseRelay(strip_usage=True)
    assert _run(relay, [bad]) == bad
    assert relay.malformed
    assert relay.usage is None


def test_a_usage_of_the_wrong_type_is_malformed_not_counted() -> None:
    bad = ROLE + USAGE.replace(b'"prompt_tokens":12', b'"prompt_tokens":"12"') + DONE
    relay = SseRelay(strip_usage=True)
    out = _run(relay, [bad])
    assert relay.malformed
    assert relay.usage is None
    assert out == bad  # not recognised as usage: nothing removed
