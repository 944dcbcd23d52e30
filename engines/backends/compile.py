"""``torch.compile`` (inductor) engine.

On CPU the default mode turns on inductor's *freezing* (weights become
constants, so conv+bn folding and oneDNN weight pre-packing happen at compile
time), which is where most of inductor's CPU inference gain comes from. On CUDA
``compile_mode="reduce-overhead"`` captures CUDA graphs, one per allowed batch
size; static shapes (``dynamic=False``) are safe because the base class only
ever passes the allowed sizes.
"""
from __future__ import annotations

import torch

from ..detector import Detector, Output
from ..errors import EngineError, EngineUnavailable
from .base import Engine, EngineConfig
from .eager import prepare_input, prepared_module


def _compile_kwargs(cfg: EngineConfig) -> dict:
    # torch.compile refuses both ``mode`` and ``options`` at once.
    if cfg.compile_mode == "default" and not cfg.is_cuda:
        return {"options": {"freezing": True}}
    return {"mode": cfg.compile_mode}


def _raise_recompile_limit(extra: int) -> None:
    """Every Detector shares ``Detector.forward``'s code object, so all compiled
    detectors x batch sizes count against one dynamo recompile limit (8 by
    default); past it dynamo silently falls back to eager. Grow it by the
    number of graphs each build adds instead."""
    import torch._dynamo.config as dcfg

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dcfg, name):
            setattr(dcfg, name, getattr(dcfg, name) + extra)


class CompileEngine(Engine):
    kind = "compile"

    def __init__(self, detector: Detector, cfg: EngineConfig):
        super().__init__(detector, cfg)
        if cfg.compile_mode == "reduce-overhead" and not cfg.is_cuda:
            # As ort-trt and tensorrt on CPU: it ran as plain compile without freezing, and
            # bench rows and scan rows named it compile-cg (CUDA graphs) all the same.
            raise EngineUnavailable("compile-cg (torch.compile with CUDA graphs) needs a CUDA device "
                                    "(--device cuda); on CPU use compile")
        self.model = None

    def _build(self) -> None:
        eager = prepared_module(self.detector, self.cfg)
        kwargs = _compile_kwargs(self.cfg)
        _raise_recompile_limit(2 * len(self.cfg.batch_sizes))
        try:
            self.model = torch.compile(eager, dynamic=False, fullgraph=False, **kwargs)
            # Compilation is lazy: trigger it here for every allowed size so
            # build time is measured at build and the first scan is not slowed.
            with torch.no_grad():
                for b in self.cfg.batch_sizes:
                    self._run(self.spec.example_input(b, device=self.device))
        except Exception as e:  # inductor raises many types (BackendCompilerFailed, CalledProcessError...)
            raise EngineError(f"torch.compile failed for {self.detector.name} ({kwargs}): {e}") from e
        self.info.notes.append(f"torch.compile {kwargs}")

    def _run(self, x: torch.Tensor) -> Output:
        graphs = self.cfg.compile_mode == "reduce-overhead" and self.cfg.is_cuda
        if graphs:
            # Each call is a new inference step; lets cudagraph trees reuse memory.
            torch.compiler.cudagraph_mark_step_begin()
        out = self.model(prepare_input(x, self.cfg))
        if graphs:
            # CUDA-graph outputs live in a static pool overwritten by the next
            # replay; clone so results the caller keeps stay valid.
            out = out.clone() if isinstance(out, torch.Tensor) else tuple(o.clone() for o in out)
        return out
