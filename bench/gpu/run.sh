#!/usr/bin/env bash
# One command for a lent CUDA machine: GPU tests + every GPU benchmark, within 8 minutes.
#
#   bash bench/gpu/run.sh            # from the repository root (a fresh copy is enough)
#
# Uses the Python that has torch (python3, or $PYTHON). What the machine lacks (PyAV, kornia,
# facenet-pytorch, pydantic, FastAPI) comes packed by `python bench/gpu/pack.py` into
# .gpu/site.tar.xz (carry .gpu: it fits the device's 64 MiB beside the tree, the wheels do
# not) or as wheels in .whl/ (../shared/tools/gpu-wheels.sh); either is put into .site/
# first. Results: bench/results/*cuda*.json, and a
# summary of every step in bench/results/gpu_run_cuda.json. Without a CUDA device it
# changes nothing and exits 0, saying why.
set -u
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "bench/gpu/run.sh: no CUDA run: $PY not found"; exit 0
fi
if ! why="$("$PY" -c 'import torch, sys
sys.exit(0) if torch.cuda.is_available() else print("torch %s sees no CUDA device" % torch.__version__)' 2>&1)"; then
  echo "bench/gpu/run.sh: no CUDA run: cannot import torch ($why)"; exit 0
fi
if [ -n "$why" ]; then
  echo "bench/gpu/run.sh: no CUDA run: $why; nothing to benchmark on this machine"; exit 0
fi

if [ -f .gpu/site.tar.xz ]; then
  echo "unpacking .gpu/site.tar.xz into .site/"
  "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
    .gpu/site.tar.xz .site || echo "warning: .gpu/site.tar.xz did not unpack"
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  echo "installing $(ls .whl/*.whl | wc -l) carried wheels into .site/"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .site .whl/*.whl \
    || echo "warning: some carried wheels did not install"
fi
export PYTHONPATH="$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DFSCAN_CACHE_DIR="${DFSCAN_CACHE_DIR:-${TMPDIR:-/tmp}/dfscan-gpu-cache}"
"$PY" bench/gpu/run.py --budget "${DFSCAN_GPU_BUDGET_S:-450}" "$@"
rc=$?
# On the lent machine only what lands in $OUT comes back (8 files at most): one archive.
# (engines_cuda_fp32_fast.json, pipeline_cuda.json, gpu_run_cuda.json, ...)
if [ -n "${OUT:-}" ] && [ -d "$OUT" ] && compgen -G "bench/results/*cuda*" >/dev/null; then
  tar -czf "$OUT/gpu_results.tgz" bench/results/*cuda* && echo "results: \$OUT/gpu_results.tgz (untar in the repository root)"
fi
exit $rc
