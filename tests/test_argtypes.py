"""Every numeric option of every dfscan command refuses NaN, inf, negatives and zero where they
mean nothing, in one ``dfscan: error: ...`` line naming the option, exit 2, before any work.

Options checked while parsing use :mod:`scanner.argtypes`; scan's and the live commands' own
numbers are checked by their config models (they may come from a YAML file too)."""
from __future__ import annotations

import argparse
import math

import pytest

from scanner import argtypes
from scanner.cli import build_parser, main

VALUES = ("nan", "inf", "-1", "0")
SCAN = {"--frames": (), "--fps": (), "--batch-size": (), "--threshold": ("0",), "--max-faces": (),
        "--min-face": (), "--det-max-side": (), "--workers": (), "--topk": ()}  # add_scan_options: scan and eval
SEEDS = {"--seed": ("0",)}
TIMEOUT = {"--video-timeout": ("0",)}  # 0: no limit (scanner.argtypes.seconds_or_none)
# command -> option -> the values of VALUES it takes (as before scanner.argtypes: none looser)
ACCEPTS = {
    ("scan",): {**SCAN, "--metrics-port": ("0",), "--ray-cpus-per-actor": (), "--ray-gpus-per-actor": ("0",),
                "--ray-actors": (), **TIMEOUT},
    ("eval",): {**SCAN, "--acc-threshold": ("-1", "0"), **TIMEOUT},
    ("bench",): {"--batch-sizes": (), "--threads": (), "--iters": (), "--warmup": ("0",)},
    ("engines", "build"): {"--batch-sizes": (), "--threads": ()},
    ("probe", "fit"): {"--size": (), "--frames": (), "--batch-size": (), "--C": (), "--heldout": (), **SEEDS},
    ("separability",): {"--size": (), "--frames": (), **SEEDS},
    ("synth",): {"--frames": (), "--size": (), "--context": (), "--max-faces": (), **SEEDS},
    ("watch",): {"--sample-fps": ("0",), "--window": (), "--fake-above": ("0",), "--real-below": ("0",),
                 "--duration": ()},
    ("serve",): {"--port": ("0",)},
    ("report",): {"--top-k": ("0",), "--open": ("0",)},
    ("train",): {"--cache-frames": (), "--every": (), "--size": (), "--epochs": (), "--steps": (),
                 "--batch-size": (), "--lr": (), "--freeze": ("0",), "--p-mfs": ("0",), "--p-global": ("0",),
                 "--p-recon": ("0",), "--p-edge": ("0",), "--p-low-res": ("0",), "--threads": (),
                 "--max-minutes": (), "--val-size": (), "--workers": ("0",), **SEEDS},
}
# Checked by a config model, which names its key rather than the flag.
CONFIG_KEYS = {"--window": "window_s", "--port": "api.port"}


def _numeric(action: argparse.Action) -> bool:
    return bool(action.option_strings) and (action.type in (int, float) or
                                            getattr(action.type, "__module__", "") == argtypes.__name__)


def _numeric_options(parser: argparse.ArgumentParser, command: tuple = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _numeric_options(sub, (*command, name))
        elif _numeric(action):
            yield command, action.option_strings[-1], action


def test_every_numeric_option_is_listed_and_checked():
    """A new numeric option needs its row in ACCEPTS, and a plain int/float type only where
    a config model checks the value (scan's and the live commands' options)."""
    found = list(_numeric_options(build_parser("*")))
    assert {(c, o) for c, o, _ in found} == {(c, o) for c, opts in ACCEPTS.items() for o in opts}
    plain = {(c, o) for c, o, a in found if a.type in (int, float)}
    assert plain == {(("scan",), o) for o in ACCEPTS[("scan",)] if o not in TIMEOUT} | {(("eval",), o) for o in SCAN} | {
        (("watch",), o) for o in ("--sample-fps", "--window", "--fake-above", "--real-below")} | {
        (("serve",), "--port")}


def _base(command: tuple, tmp_path) -> list[str]:
    """Arguments that parse, for a command that would then start its work (it never gets there)."""
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("path,label\na.mp4,fake\n")
    (tmp_path / "serve.yaml").write_text("model: {detector: test_tiny}\napi: {port: 0}\n")
    return {
        ("scan",): ["scan", str(tmp_path / "a.mp4"), "--out", str(tmp_path / "o.jsonl")],
        ("eval",): ["eval", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "e.json"), "--quiet"],
        ("bench",): ["bench", "--detectors", "test_tiny", "--engines", "eager", "--out", str(tmp_path / "b")],
        ("engines", "build"): ["engines", "build", "--detector", "test_tiny", "--cache-dir", str(tmp_path / "c")],
        ("probe", "fit"): ["probe", "fit", str(tmp_path / "labels.csv"), "--backbone", "torchvision",
                           "--backbone-weights", "x", "--out", str(tmp_path / "p")],
        ("separability",): ["separability", str(tmp_path / "labels.csv"), "--detector", "test_tiny",
                            "--out", str(tmp_path / "s.json")],
        ("synth",): ["synth", str(tmp_path / "a.mp4"), "--out", str(tmp_path / "s")],
        ("watch",): ["watch", "rtsp://127.0.0.1:1/x"],
        ("serve",): ["serve", "--config", str(tmp_path / "serve.yaml")],
        ("report",): ["report", str(tmp_path / "r.jsonl")],
        ("train",): ["train", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "run")],
    }[command]


CASES = [(c, o, v) for c, opts in ACCEPTS.items() for o, ok in opts.items() for v in VALUES if v not in ok]


@pytest.mark.parametrize("command, option, value", CASES, ids=[f"{' '.join(c)} {o} {v}" for c, o, v in CASES])
def test_a_number_a_command_cannot_use_is_one_line_exit_2(command, option, value, tmp_path, capsys):
    try:
        code = main([*_base(command, tmp_path), option, value])
    except SystemExit as e:  # refused by argparse, as it parsed the value
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dfscan: error: ") and err.count("\n") == 1, err
    key = CONFIG_KEYS.get(option, option.lstrip("-").replace("-", "_"))
    assert f"argument {option}: " in err or f"{key}: " in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "labels.csv", "serve.yaml"]  # no work


ACCEPTED = [(c, o, v) for c, opts in ACCEPTS.items() for o, ok in opts.items() for v in ok]


@pytest.mark.parametrize("command, option, value", ACCEPTED, ids=[f"{' '.join(c)} {o} {v}" for c, o, v in ACCEPTED])
def test_values_taken_before_are_still_parsed(command, option, value, tmp_path):
    parser = build_parser(command[0])
    dest = next(a.dest for c, o, a in _numeric_options(parser) if (c, o) == (command, option))
    expected = None if option in TIMEOUT else float(value)  # --video-timeout 0: no limit
    assert getattr(parser.parse_args([*_base(command, tmp_path), option, value]), dest) == expected


def test_the_types():
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer from 1 to 3, not '4'"):
        argtypes.int_in(1, 3)("4")
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer >= 0, not '1.5'"):
        argtypes.int_in(0)("1.5")
    assert argtypes.int_in(0)("0") == 0 and argtypes.SEED(str(2**32 - 1)) == 2**32 - 1
    with pytest.raises(argparse.ArgumentTypeError):
        argtypes.SEED(str(2**32))
    for bad in ("nan", "inf", "-inf", "0", "-1", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a positive finite number"):
            argtypes.positive(bad)
    assert argtypes.positive("1e-9") == 1e-9
    assert argtypes.fraction("0") == 0.0 and argtypes.fraction("1") == 1.0
    for bad in ("nan", "1.01", "-0.1"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be a number in \[0, 1\]"):
            argtypes.fraction(bad)
    share = argtypes.float_in(0.0, 1.0, open_=True)
    for bad in ("0", "1", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be a number in \(0, 1\)"):
            share(bad)
    assert argtypes.finite("-3") == -3.0
    for bad in ("nan", "inf", "-inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number"):
            argtypes.finite(bad)
    assert argtypes.comma_list(argtypes.positive)("1e-3,10") == (1e-3, 10.0)
    with pytest.raises(argparse.ArgumentTypeError, match=r"not 'nan' \(in '1,nan'\)"):
        argtypes.comma_list(argtypes.positive)("1,nan")
    assert math.isnan(argtypes._float("x"))


@pytest.mark.parametrize("argv, helped", [(["scan", "--bogus"], "dfscan scan --help"),
                                          (["-v", "probe", "fit"], "dfscan probe fit --help"),
                                          (["probe", "fit", "x.csv", "--backbone", "dino", "--out", "o", "--bogus"],
                                           "dfscan probe fit --help"),
                                          (["--bogus"], "dfscan --help")])
def test_a_usage_error_names_the_help_that_answers_it(argv, helped, capsys):
    """Usage errors are one line (no usage block), so the line says where the options are:
    the top parser reports a sub-command's unrecognized arguments, yet its help is meant."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.rstrip().endswith(f"(options: {helped})"), err
