"""Audit of `dfscan bench` numbers: computations checked with stub timings, never real ones."""
from __future__ import annotations

import io

import pytest

from engines import benchmark as B


def _fake_times(ms_by_engine):
    """time_interleaved stand-in: each engine's per-call milliseconds are given, not measured."""
    def fake(fns, iters, warmup, cuda=None):
        return {n: list(ms_by_engine[n]) for n in fns}
    return fake


@pytest.fixture
def bench_with_failed_parity(monkeypatch):
    """eager-cl is 4x faster than eager but kept by --allow-parity-failure after failing parity."""
    from engines import backends

    real = backends.build_engine

    def build(det, cfg):
        eng = real(det, cfg)
        if cfg.channels_last:
            eng.info.parity = {**(eng.info.parity or {}), "cosine": 0.9, "verdict_flips": 3, "passed": False}
        return eng

    monkeypatch.setattr(backends, "build_engine", build)
    monkeypatch.setattr(B, "time_interleaved", _fake_times({"eager": [8.0] * 5, "eager-cl": [2.0] * 5}))
    return B.bench_engines(["test_tiny"], ["eager", "eager-cl"], (4,), iters=5, warmup=0,
                           allow_parity_failure=True)


def test_stub_timings_give_exact_numbers(bench_with_failed_parity):
    rows = {r["engine"]: r for r in bench_with_failed_parity["results"]}
    assert rows["eager"]["faces_per_s"] == pytest.approx(4 * 1e3 / 8.0)  # faces, not batches, per s
    assert rows["eager-cl"]["speedup"] == pytest.approx(4.0)  # still measured and listed


def test_best_engine_is_never_one_that_failed_parity(bench_with_failed_parity):
    # Before: best named eager-cl (2,000 faces/s, 4.0x) though its scores disagree with eager.
    best = bench_with_failed_parity["best"]
    assert [(b["batch_size"], b["engine"]) for b in best] == [(4, "eager")]
    assert best[0]["faces_per_s"] == pytest.approx(500.0)


def test_table_says_parity_failed(bench_with_failed_parity):
    from rich.console import Console

    buf = io.StringIO()
    B.print_table(bench_with_failed_parity, Console(file=buf, width=250))
    line = next(ln for ln in buf.getvalue().splitlines() if "eager-cl" in ln)
    assert "FAILED" in line
    assert "FAILED" not in next(ln for ln in buf.getvalue().splitlines() if "│ eager " in ln)
