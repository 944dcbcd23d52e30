"""Out-of-range numbers for ``dfscan bench`` / ``dfscan engines build`` are one-line usage
errors: --iters 0 was a numpy IndexError traceback, --threads -1 a torch RuntimeError, and
--batch-sizes 100000 allocated a 4.9 GB warm-up input (OOM kill) where scan caps at 4096."""
import pytest

from engines.backends.base import MAX_BATCH, EngineConfig
from engines.errors import EngineError
from scanner import cli_engines
from scanner.cli import main


@pytest.mark.parametrize("extra", [["--iters", "0"], ["--iters", "-2"], ["--warmup", "-1"], ["--threads", "-1"],
                                   ["--batch-sizes", "0"], ["--batch-sizes", "1", "100000"]])
def test_bench_refuses_out_of_range(extra, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--detectors", "test_tiny", "--engines", "eager", "--out", str(tmp_path), *extra])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_engines_build_refuses_huge_batch(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["engines", "build", "--detector", "test_tiny", "--batch-sizes", "100000", "--cache-dir", str(tmp_path)])
    assert e.value.code == 2


def test_engine_config_caps_batch_sizes():
    assert cli_engines.MAX_BATCH == MAX_BATCH  # the parser's copy stays in step
    assert EngineConfig(batch_sizes=(1, MAX_BATCH)).batch_sizes == (1, MAX_BATCH)
    with pytest.raises(EngineError, match="1..4096"):
        EngineConfig(batch_sizes=(1, MAX_BATCH + 1))


@pytest.mark.parametrize("argv", [
    ["engines", "build", "--detector", "test_tiny", "--weights", "/nonexistent/w.safetensors"],
    ["bench", "--detectors", "test_tiny", "--weights", "no-equals-sign"],
    ["engines", "clear"],
])
def test_engines_and_bench_errors_are_one_dfscan_error_line(argv, tmp_path, capsys, monkeypatch):
    """As every other command's (README: `dfscan: error: ...`, one line): engines build/clear
    printed a bare `error: ...`, and bench a rich line wrapped at the console's width."""
    monkeypatch.setenv("COLUMNS", "40")
    assert main([*argv, "--cache-dir", str(tmp_path)] if argv[0] == "engines" else
                [*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: ") and err.count("\n") == 1, err


def test_engines_clear_with_an_empty_key_prefix_deletes_nothing(tmp_path, capsys):
    """Every key starts with "": `dfscan engines clear "$KEY"` with KEY unset removed every entry."""
    keys = ["ab12" * 16, "cd34" * 16]  # entries are named by a 64-digit key
    for key in keys:
        (tmp_path / key).mkdir()
    assert main(["engines", "clear", "", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: ") and "--all" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == keys
    assert main(["engines", "clear", "ab", "--cache-dir", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == keys[1:]


def test_engines_list_of_foreign_numbers_is_a_table_not_a_traceback(tmp_path, capsys):
    """A hand-edited or foreign meta.json with text where numbers go was a ValueError traceback."""
    import json

    for key, meta in {"a1" * 32: {"fields": {"detector": "x"}, "parity": {"cosine": "high"}},
                      "b2" * 32: {"fields": {}, "size_bytes": "big", "parity": "ok"}}.items():
        (tmp_path / key).mkdir()
        (tmp_path / key / "meta.json").write_text(json.dumps(meta))
    assert main(["engines", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "high" in out and "big" in out


@pytest.mark.parametrize("pipeline", [[], ["--pipeline", "v.mp4"]])
def test_bench_out_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys, pipeline):
    """An --out under a file was an OSError traceback once the engines were built and timed
    (or the pipeline benchmarked); checked first, as the research commands do (output.writable)."""
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "results"
    assert main(["bench", "--detectors", "test_tiny", "--engines", "eager", "--out", str(out), *pipeline]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dfscan: error: cannot write {out}/") and err.count("\n") == 1, err


def test_bench_pipeline_runs_every_engine_named_in_the_cache_named(tmp_path, capsys):
    """--pipeline ran the first of --engines only (the others dropped without a word), built
    it in the default cache whatever --cache-dir said, and reported 'auto' for the engine."""
    import json

    from conftest import DATA

    cache = tmp_path / "cache"
    assert main(["bench", "--pipeline", str(DATA / "d1.mp4"), "--detectors", "test_tiny", "--engines", "eager",
                 "onnxruntime", "--cache-dir", str(cache), "--out", str(tmp_path), "--name", "p"]) == 0
    res = json.loads((tmp_path / "p.json").read_text())
    assert [(r["detector"], r["engine"]) for r in res["results"]] == [("test_tiny", "eager"),
                                                                      ("test_tiny", "onnxruntime")]
    assert all(r["videos"] == 1 and r["errors"] == 0 for r in res["results"])
    from engines.cache import EngineCache

    assert [r["backend"] for r in EngineCache(cache).list() if r.get("detector") == "test_tiny"] == ["onnxruntime"]


@pytest.mark.parametrize("extra", [["--iters", "3"], ["--warmup", "0"], ["--threads", "1"], ["--allow-parity-failure"]])
def test_bench_pipeline_refuses_engine_timing_options_it_would_ignore(extra, tmp_path, capsys):
    assert main(["bench", "--pipeline", "v.mp4", "--detectors", "test_tiny", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: --pipeline scans as dfscan scan does and would ignore "
                          f"{extra[0]}") and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("pipeline", [False, True])
@pytest.mark.parametrize("detectors", [["nosuch"], ["test_tiny", "nosuch"], ["probe"], ["test_tiny", "probe"]])
def test_bench_refused_for_a_detector_leaves_an_earlier_result_as_it_was(detectors, pipeline, tmp_path, capsys):
    """The result file was written empty (complete: false) before the first detector loaded:
    a misspelt --detectors name (or one needing --weights) replaced an earlier run's results,
    bench/results/engines_cpu.json by default, while the command said only 'error'. A later
    detector needing --weights (test_tiny probe) failed only once the first's results were
    written; with --pipeline it was listed as skipped (exit 0, the file replaced)."""
    from conftest import DATA

    earlier = '{"complete": true, "results": [{"old": 1}]}'
    (tmp_path / "b.json").write_text(earlier)
    mode = ["--pipeline", str(DATA / "d1.mp4")] if pipeline else []
    assert main(["bench", *mode, "--detectors", *detectors, "--engines", "eager", "--batch-sizes", "1",
                 "--out", str(tmp_path), "--name", "b"]) == 2
    assert capsys.readouterr().err.startswith("dfscan: error: ")
    assert (tmp_path / "b.json").read_text() == earlier and [p.name for p in tmp_path.iterdir()] == ["b.json"]
