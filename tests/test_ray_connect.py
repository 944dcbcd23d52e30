"""``--ray local`` on a host too busy for Ray to start: one-line error, not a traceback."""
from __future__ import annotations

import pytest

from scanner.distributed import RayUnavailable, connect

ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'ray>=2.9')")


def test_ray_startup_timeout_is_a_one_line_error(monkeypatch):
    def init(**_kw):  # what ray.init raises when the raylet or GCS is slow to come up
        raise Exception("The current node timed out during startup. This could happen because "
                        "some of the raylet failed to startup or the GCS has become overloaded.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(RayUnavailable, match="cannot reach the Ray cluster 'local': The current node timed out"):
        connect("local")


def test_connect_keeps_the_callers_sigterm_handler(monkeypatch):
    import signal
    import sys

    def mine(_signum, _frame):
        pass

    def init(**_kw):  # ray.init's driver set-up: SIGTERM -> sys.exit(15)
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(signum))

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    before = signal.signal(signal.SIGTERM, mine)
    try:
        assert connect("local") is True
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)
