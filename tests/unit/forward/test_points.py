"""Line protocol and point identity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gateway.forward.points import ALERT, SUMMARY, encode, point
from gateway.forward.sender import Verdict, classify, retry_after


def test_line_protocol_escapes_and_types() -> None:
    p = point(ALERT, {"site": "a b", "node": "n,1", "rule": "x=y", "severity": "critical",
                      "kind": "raised", "alert_id": "id"}, {"severity_level": 2, "value": 1.5}, 1000)  # fmt: skip
    assert encode(p) == (
        b"fieldgate_alert,alert_id=id,kind=raised,node=n\\,1,rule=x\\=y,severity=critical,"
        b"site=a\\ b severity_level=2i,value=1.5 1000"
    )
    assert encode(p, "ns") == encode(p, "ms")[:-4] + b"1000000000"  # type: ignore[index]


def test_identity_is_measurement_tags_and_source_time_only() -> None:
    tags = {"site": "s", "node": "n", "channel": "c", "unit": "A", "interval": "60s"}
    a = point(SUMMARY, tags, {"count": 1}, 60_000)
    b = point(SUMMARY, dict(reversed(tags.items())), {"count": 2}, 60_000)
    assert a.series == b.series
    assert encode(a) != encode(b)


def test_non_finite_values_are_left_out_and_unknown_fields_refused() -> None:
    p = point(SUMMARY, {"site": "s"}, {"mean": math.nan, "max": math.inf, "count": 0}, 1)
    assert encode(p) == b"fieldgate_summary,site=s count=0i 1"
    assert encode(point(SUMMARY, {"site": "s"}, {"mean": math.nan}, 1)) is None
    with pytest.raises(ValueError, match="schema"):
        point(SUMMARY, {"site": "s"}, {"median": 1.0}, 1)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(204, Verdict.DELIVERED), (400, Verdict.REFUSED), (422, Verdict.REFUSED),
     (401, Verdict.AUTH), (403, Verdict.AUTH), (413, Verdict.TOO_LARGE), (429, Verdict.RETRY),
     (500, Verdict.RETRY), (503, Verdict.RETRY), (404, Verdict.RETRY)],
)  # fmt: skip
def test_status_codes_are_classified(status: int, verdict: Verdict) -> None:
    assert classify(status, "", {}).verdict is verdict


def test_retry_after_is_honoured_on_429_and_503_only() -> None:
    assert classify(429, "", {"Retry-After": "7"}).retry_after_s == 7.0
    assert (
        classify(503, "", {"Retry-After": "Thu, 01 Jan 1970 00:00:30 GMT"}).retry_after_s
        is not None
    )
    assert classify(500, "", {"Retry-After": "7"}).retry_after_s is None
    assert retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now=10.0) == 20.0
    assert retry_after("soon") is None


async def test_an_unreadable_token_file_is_an_auth_failure_not_a_crash(tmp_path: Path) -> None:
    from gateway.forward.config import ForwardConfig
    from gateway.forward.sender import Sender

    cfg = ForwardConfig(url="http://127.0.0.1:9", token_file=tmp_path / "missing")
    async with Sender(cfg) as sender:
        outcome = await sender.send(b"m f=1i 1\n")
    assert outcome.verdict is Verdict.AUTH
    assert "cannot read" in outcome.reason
