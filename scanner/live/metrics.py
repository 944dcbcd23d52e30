"""Prometheus metrics of the live service: defined with every other dfscan metric in
:mod:`scanner.metrics` (one module for batch and live); re-exported here."""
from __future__ import annotations

from ..metrics import LATENCY_BUCKETS, STATES, TRANSPORTS, LiveMetrics, StreamMetrics, set_build_info

__all__ = ["LATENCY_BUCKETS", "STATES", "TRANSPORTS", "LiveMetrics", "StreamMetrics", "set_build_info"]
