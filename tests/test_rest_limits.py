"""The REST weight budget: snapshot requests waiting for a new minute never leave together past the limit
(past Binance's limit an IP gets 429, then a 418 ban)."""

from __future__ import annotations

import httpx

from recorder.client import RestLimiter
from recorder.markets import SPOT

SNAPSHOT_1000 = SPOT.depth_weight(1000)  # 50


def test_requests_waiting_for_the_next_minute_go_out_only_within_the_budget():
    limiter = RestLimiter(SPOT.weight_limit_per_minute, headroom=0.8)
    minute = 1_800_000_000 - 1_800_000_000 % 60
    granted = [w for w in range(500) if limiter.reserve(SNAPSHOT_1000, minute + 0.01) == 0.0]
    assert len(granted) == 6000 * 0.8 // SNAPSHOT_1000 == 96
    # the rest wait for the next minute, and again only 96 of them go
    wait = limiter.reserve(SNAPSHOT_1000, minute + 0.02)
    assert 59.9 < wait <= 60.05
    for _ in granted:
        limiter.done(SNAPSHOT_1000)  # their responses came back
    later = minute + 60.07
    assert sum(limiter.reserve(SNAPSHOT_1000, later) == 0.0 for _ in range(500)) == 96


def test_the_servers_figure_counts_with_what_is_still_in_flight():
    limiter = RestLimiter(1000, headroom=1.0)
    now = 1_800_000_000 - 1_800_000_000 % 60 + 1.0
    assert limiter.reserve(100, now) == 0.0 and limiter.reserve(100, now) == 0.0
    # another client of the same IP used 700: the server says 800 (it saw one of ours), one is in flight
    limiter.done(100)
    limiter.observe(httpx.Headers({"x-mbx-used-weight-1m": "800"}), now + 0.1)
    assert limiter.estimate(now + 0.1) == 900
    assert limiter.reserve(100, now + 0.2) == 0.0  # 1000: exactly the limit
    assert limiter.reserve(100, now + 0.3) > 0  # 1100 would be over
    limiter.done(100)
    limiter.done(100)
    assert limiter.in_flight == 0


def test_retry_after_blocks_every_request_until_it_has_passed():
    limiter = RestLimiter(6000)
    limiter.back_off(30.0, 100.0)
    assert limiter.reserve(5, 110.0) == 20.0
    assert limiter.reserve(5, 130.5) == 0.0
