"""Start-up: the command line's parser imports no heavy module, and decoding that
starts before the model loads gives exactly the frames and rows of a normal scan."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import DATA, ROOT

HEAVY = ("torch", "torchvision", "kornia", "facenet_pytorch", "onnxruntime", "sklearn", "matplotlib")


def _imported_after(code: str) -> list[str]:
    """Heavy modules present in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"import sys, json\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parser_and_help_import_no_heavy_module():
    code = ("import scanner.cli as c\nc.build_parser(None)\nc.build_parser('scan')\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    c.main(['scan', '--help'])\nexcept SystemExit:\n    pass")
    assert _imported_after(code) == []


def test_scan_command_modules_before_the_model_import_no_torch():
    # Everything `dfscan scan` runs before building the context (config, inputs,
    # sinks, early decode) must stay light, or decoding cannot start early.
    assert _imported_after("import scanner.run, scanner.warmstart, scanner.output") == []


def test_a_whole_scan_loads_neither_torchvision_models_nor_dynamo(tmp_path):
    # torchvision.models (through facenet_pytorch, torchvision.ops or an ADM backbone)
    # imports torch._dynamo: 1.0-1.6 s of every `dfscan scan` here. The face detector
    # and the detectors use torchvision's kernels without it (engines/tv_ops.py).
    code = ("import sys, json\nfrom scanner.cli import main\n"
            f"rc = main(['scan', {str(DATA / 'd1.mp4')!r}, '--frames', '4', '--no-progress',"
            f" '--out', {str(tmp_path / 'rows.jsonl')!r}, '--no-details'])\n"
            "print(json.dumps([rc] + [m for m in ('torch._dynamo', 'torchvision.models', 'facenet_pytorch')"
            " if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [0]


def test_stub_help_lines_match_the_commands_own():
    from scanner.cli import build_parser

    def helps(parser):
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        return {a.dest: a.help for a in sub._choices_actions}

    full, light = helps(build_parser("*")), helps(build_parser(None))
    assert light == full and len(full) >= 10


def test_selected_command_builds_its_full_parser():
    from scanner.cli import build_parser, selected_command

    assert selected_command(["-v", "engines", "list"]) == "engines"
    args = build_parser("engines").parse_args(["engines", "list"])
    assert callable(args.func)


@pytest.fixture(scope="module")
def tiny_ctx():
    from scanner.config import ScanConfig
    from scanner.pipeline import build_context

    return build_context(ScanConfig(frames=6, detector="test_tiny", engine="eager", workers=1))


def _faces(row):
    return [(f["index"], [fc["box"] for fc in f["faces"]]) for f in row["frames_detail"]]


def test_prestarted_decode_gives_the_same_row(tiny_ctx):
    from scanner.pipeline import scan_video
    from scanner.warmstart import prestart

    clip = DATA / "d1.mp4"
    plain = scan_video(clip, tiny_ctx)
    pre = prestart([clip, clip], tiny_ctx.cfg.model_copy(update={"workers": 2}))
    assert list(pre) == [str(clip)]  # one decode thread per distinct video
    tiny_ctx.prestarted = pre
    early = scan_video(clip, tiny_ctx)
    assert tiny_ctx.prestarted == {}  # consumed, not opened a second time
    assert early["verdict"] == plain["verdict"] != "error"
    assert early["sha256"] == plain["sha256"] and early["frames"] == plain["frames"] == 6
    assert _faces(early) == _faces(plain) and early["score"] == plain["score"]


def test_unused_prestarted_threads_are_stopped(tiny_ctx):
    from scanner.warmstart import close_all, prestart

    pre = prestart([DATA / "d18.mp4"], tiny_ctx.cfg)
    thread = pre[str(DATA / "d18.mp4")].frames._thread
    close_all(pre)
    assert pre == {} and not thread.is_alive()


def test_prestart_error_becomes_the_pipelines_error_row(tiny_ctx, tmp_path):
    from scanner.pipeline import scan_video
    from scanner.warmstart import prestart

    bad = tmp_path / "junk.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    tiny_ctx.prestarted = prestart([bad], tiny_ctx.cfg)
    row = scan_video(bad, tiny_ctx)
    assert row["verdict"] == "error" and row["error"]["kind"] == "not_video"


def test_the_command_exits_at_once_with_its_code_and_every_output_flushed(tmp_path):
    # `python -m scanner.cli` / the `dfscan` script end with os._exit (no interpreter
    # teardown): the exit code, the rows, the piped summary and exit handlers must survive.
    rows = tmp_path / "rows.jsonl"
    missing = tmp_path / "gone.mp4"
    code = ("import atexit, sys\nsys.argv = ['dfscan'] + sys.argv[1:]\n"
            f"atexit.register(lambda: open({str(tmp_path / 'atexit')!r}, 'w').write('ran'))\n"
            "from scanner.cli import entry\nentry()")
    out = subprocess.run([sys.executable, "-c", code, "scan", str(DATA / "d1.mp4"), str(missing), "--frames", "4",
                          "--no-progress", "--no-details", "--out", str(rows)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr  # one input is an error row
    got = [json.loads(line) for line in rows.read_text().splitlines()]
    assert sorted(r["verdict"] for r in got) == ["error", "real"]
    assert "dfscan summary" in out.stdout and "stage share" in out.stdout
    assert (tmp_path / "atexit").read_text() == "ran"


def test_startup_bench_help_is_whole_and_a_missing_clip_stops_it(tmp_path):
    """bench/startup.py's --help stopped mid-sentence ("... ``dfscan scan`` until its"), and
    without the shared crowd clip it timed six exit-2 scans of it and wrote them as results;
    it now says what it measures and names the missing clip in one line, writing nothing."""
    h = subprocess.run([sys.executable, str(ROOT / "bench/startup.py"), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert h.returncode == 0 and "first decoded" in " ".join(h.stdout.split())
    out = tmp_path / "s.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench/startup.py"), "--shared", str(tmp_path / "none"),
                        "--runs", "1", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "crowd_1080p.mp4 not found" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
