"""What a --ray scan ships to its actors (no Ray needed: a stand-in records the calls)."""
from __future__ import annotations

from types import SimpleNamespace

import scanner.distributed as dist
from scanner.config import ScanConfig


def test_ray_actors_get_no_pushgateway_credentials(monkeypatch):
    """The worker config carried --metrics-push with its user:password@ to every actor
    (serialised into each actor's creation task on every node); workers never push."""
    sent = []

    class Handle:
        info = SimpleNamespace(remote=lambda: {"engine_info": {}, "node": "n", "detector": "d",
                                               "weights_hash": "h", "threshold": 0.5})

    class Remote:
        def remote(self, wcfg, _threads):
            sent.append(wcfg)
            return Handle()

    fake = SimpleNamespace(remote=lambda **_kw: (lambda _cls: Remote()),
                           nodes=lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}],
                           get=lambda refs: list(refs), exceptions=SimpleNamespace(RayError=RuntimeError))
    monkeypatch.setattr(dist, "_ray", lambda: fake)
    monkeypatch.setattr(dist, "connect", lambda _address: False)
    cfg = ScanConfig(detector="test_tiny", ray="auto", ray_actors=2,
                     metrics_push="https://user:s3cret@gw.example:9091", out=["r.jsonl"], metrics_port=9108)
    dist.RayScanContext(cfg)
    assert len(sent) == 2
    for wcfg in sent:
        assert "s3cret" not in repr(wcfg)
        assert wcfg["metrics_push"] is None and wcfg["out"] is None and wcfg["metrics_port"] is None
