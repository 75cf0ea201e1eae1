"""The whole-market benchmark's inputs: a synthetic spot market of ~1,500 symbols with per-symbol activity,
and the `recorder run` config that records all of it (benchmarks/bench_recorder.py, figure 4)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from recorder.config import load_config
from recorder.markets import get_market
from replay.venue.source import BookTicker, DepthChange, Trade
from replay.venue.synthetic import CATALOGUE, SyntheticSource

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_recorder.py"
BINANCE_SYMBOL = re.compile(r"^[A-Z0-9-_.]{1,20}$")  # exchangeInfo's `symbols` parameter rule


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_recorder", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_market_mix_is_a_binance_sized_spot_market(bench):
    mix = bench.market_mix(1500)
    symbols = [s for s, _, _ in mix]
    assert len(symbols) == len(set(symbols)) == 1500
    assert all(BINANCE_SYMBOL.match(s) for s in symbols)
    tiers = {}
    for _, tier, rate in mix:
        tiers.setdefault(tier, set()).add(rate)
    assert list(tiers) == ["liquid", "active", "mid", "tail"]
    assert all(len(rates) == 1 for rates in tiers.values())
    assert {s for s, tier, _ in mix if tier == "liquid"} == set(CATALOGUE["spot"])
    tail = sum(1 for _, tier, _ in mix if tier == "tail")
    assert tail > 1000  # most of a real market is quiet
    assert 2000 < sum(rate for _, _, rate in mix) < 10_000  # events/s the venue generates


def test_generated_symbols_have_specs_named_after_them(bench):
    mix = bench.market_mix(200)
    specs = bench.market_specs(mix)
    assert set(specs) == {s for s, _, _ in mix} - set(CATALOGUE["spot"])
    for symbol, spec in specs.items():
        assert spec.symbol == symbol
        assert spec.base + spec.quote == symbol


def test_market_config_is_a_valid_recorder_config_of_every_symbol(bench, tmp_path):
    mix = bench.market_mix(1500)
    symbols = [s for s, _, _ in mix]
    path = tmp_path / "recorder.yaml"
    path.write_text(yaml.safe_dump(bench.market_config(symbols, tmp_path / "data", "127.0.0.1:9443", 400)))
    config = load_config(path, {"duration": 60.0, "ignore_window": True})
    assert config.market.name == "spot"
    assert list(config.shard_symbols) == symbols
    assert config.connection.max_streams == 400
    assert config.rest_url == "http://127.0.0.1:9443"
    assert config.ws_url == "ws://127.0.0.1:9443"


def test_depth_breaks_counts_each_diff_that_does_not_continue_the_previous(bench):
    assert bench.depth_breaks([(2, 13, 15), (1, 10, 12), (3, 16, 20)]) == 0  # ordered by seq
    assert bench.depth_breaks([(1, 10, 12), (2, 14, 15), (3, 16, 20), (4, 16, 20)]) == 2  # lost, repeated


def _output_rates(source: SyntheticSource, seconds: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in source.advance(source.start_ms + seconds * 1000):
        if isinstance(event, DepthChange | Trade | BookTicker):
            counts[event.symbol] = counts.get(event.symbol, 0) + 1
    return counts


def test_synthetic_source_takes_extra_symbols_and_a_rate_per_symbol(bench):
    mix = [("BTCUSDT", "liquid", 150.0), ("XAAAUSDT", "tail", 0.7), ("XAABFDUSD", "tail", 0.7)]
    source = SyntheticSource(get_market("spot"), [s for s, _, _ in mix], start_ms=0,
                             events_per_second={s: rate for s, _, rate in mix}, specs=bench.market_specs(mix))
    assert source.symbols() == ["BTCUSDT", "XAAAUSDT", "XAABFDUSD"]
    counts = _output_rates(source, 60)
    assert counts["BTCUSDT"] > 20 * counts["XAAAUSDT"] > 0
    assert source.exchange_info_symbol("XAABFDUSD")["quoteAsset"] == "FDUSD"


def test_synthetic_source_rejects_unknown_symbols_and_missing_rates():
    spot = get_market("spot")
    with pytest.raises(ValueError, match="unknown symbol 'XAAAUSDT'"):
        SyntheticSource(spot, ["XAAAUSDT"])
    with pytest.raises(ValueError, match="no events_per_second given for ETHUSDT"):
        SyntheticSource(spot, ["BTCUSDT", "ETHUSDT"], events_per_second={"BTCUSDT": 5.0})
