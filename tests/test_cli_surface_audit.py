"""The command-line and config surface against the README (CLI surface audit).

Every ``dfscan`` command line the README shows parses, every ``--flag`` it names exists, the
shipped YAML files hold the models' defaults, and a YAML key that is no name is one error
line naming it (scan and serve read configs alike)."""
from __future__ import annotations

import argparse
import re
import shlex

import pytest

from conftest import ROOT
from scanner.cli import build_parser, main
from scanner.config import ConfigError, ScanConfig, build_config, load_yaml

README = (ROOT / "README.md").read_text(encoding="utf-8")
# Flags the README names for other programs: pip, bench scripts, the card tool, VLC.
OTHER_TOOLS = {"--index-url", "--no-deps", "--repeat", "--reals", "--fakes", "--margin", "--protocol",
               "--counts", "--check", "--sout", "--sout-rtsp-user", "--sout-rtsp-pwd"}


def _parsers(parser: argparse.ArgumentParser, path: tuple = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _flags() -> set[str]:
    return {o for _, p in _parsers(build_parser("*")) for a in p._actions for o in a.option_strings}


def _readme_commands() -> list[str]:
    """``dfscan ...`` lines of the README's code blocks (comments cut off)."""
    lines = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", README, re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                if part.strip().startswith("dfscan"):
                    lines.append(part.split(" #")[0].strip())
    return lines


def test_every_flag_the_readme_names_exists():
    """The README listed `--topk` among the aggregation options a --resume compares: there was no
    such flag (`--video-agg topk` took its K from a YAML file only)."""
    named = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", README))
    assert named - OTHER_TOOLS - _flags() == set()


@pytest.mark.parametrize("line", _readme_commands())
def test_every_readme_command_line_parses(line):
    args = build_parser("*").parse_args(shlex.split(line)[1:])
    assert callable(args.func)


def test_topk_is_a_flag_that_wins_over_the_file(tmp_path, capsys):
    from scanner.run import config_from_args

    (tmp_path / "c.yaml").write_text("video_agg: topk\ntopk: 7\n")
    parse = build_parser("scan").parse_args
    assert config_from_args(parse(["scan", "--config", str(tmp_path / "c.yaml")])).topk == 7
    assert config_from_args(parse(["scan", "--config", str(tmp_path / "c.yaml"), "--topk", "3"])).topk == 3
    assert main(["scan", str(tmp_path / "none.mp4"), "--topk", "0"]) == 2
    assert "topk: " in capsys.readouterr().err


@pytest.mark.parametrize("command", [c for c, _ in _parsers(build_parser("*")) if c])
def test_help_of_every_command_exits_0(command, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser(command[0]).parse_args([*command, "--help"])
    assert e.value.code == 0 and "usage: dfscan" in capsys.readouterr().out


def test_the_shipped_configs_hold_the_defaults(monkeypatch):
    from scanner.live.config import ServeConfig, load_config

    assert build_config(ROOT / "configs" / "scan.yaml", {}) == ScanConfig()
    assert set(load_yaml(ROOT / "configs" / "scan.yaml")) == set(ScanConfig.model_fields)  # "lists them all"
    monkeypatch.delenv("DFSCAN_API_TOKEN", raising=False)
    shipped = load_config(ROOT / "configs" / "serve.yaml")
    assert shipped.model_copy(update={"sinks": [], "streams": []}) == ServeConfig()


@pytest.mark.parametrize("text, said", [
    ("yes: 3\n", "'yes' reads as true"), ("1: 2\n", "'1' reads as 1"), ("~: 1\n", "'~' reads as null"),
    ("frames: 8\n? [a, b]\n: 1\n", "not a sequence")])
def test_a_key_that_is_no_name_is_one_line(tmp_path, capsys, text, said):
    """`yes:` (YAML 1.1 reads it as true), `1:` and `~:` were a TypeError traceback from the scan
    (the mapping went to pydantic as keywords), a list as key one from scan and serve alike."""
    (tmp_path / "c.yaml").write_text(text)
    assert main(["scan", str(tmp_path / "a.mp4"), "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"a key must be a name: {said}" in err and "line " in err, err


def test_a_serve_config_refuses_a_list_as_key(tmp_path):
    from scanner.live.config import load_config

    (tmp_path / "s.yaml").write_text("api:\n  ? [port]\n  : 1\n")
    with pytest.raises(ConfigError, match="a key must be a name: not a sequence"):
        load_config(tmp_path / "s.yaml")


def test_a_merge_key_reads_as_yaml_means_it(tmp_path):
    """`<<: *cam` (one camera's settings shared by several) was refused as a 'tag:yaml.org,2002:merge'
    constructor error; keys after it override it, and a key given twice is still refused."""
    from scanner.live.config import load_config

    (tmp_path / "s.yaml").write_text("streams:\n  - &cam {name: a, url: 'rtsp://x/1', sample_fps: 1}\n"
                                     "  - <<: *cam\n    name: b\n")
    assert [(s.name, s.url, s.sample_fps) for s in load_config(tmp_path / "s.yaml").streams] == [
        ("a", "rtsp://x/1", 1.0), ("b", "rtsp://x/1", 1.0)]
    (tmp_path / "s.yaml").write_text("streams:\n  - &cam {name: a, url: 'rtsp://x/1'}\n"
                                     "  - <<: *cam\n    name: b\n    name: c\n")
    with pytest.raises(ConfigError, match="key 'name' is given twice"):
        load_config(tmp_path / "s.yaml")


@pytest.mark.parametrize("argv", [["synth", "a.mp4", "--out", "o"], ["train", "--out", "o"],
                                  ["probe", "fit", "l.csv", "--backbone", "timm", "--out", "o"],
                                  ["separability", "l.csv"]])
def test_a_crop_side_beyond_any_face_is_refused(argv, capsys):
    """synth --size 60000 (a typo) allocated 10.8 GB for its first chip: a cv2 traceback, or the
    machine's memory; train, probe fit and separability took any side too."""
    with pytest.raises(SystemExit) as e:
        build_parser(argv[0]).parse_args([*argv, "--size", "60000"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --size: must be an integer from" in err and err.count("\n") == 1
    assert build_parser(argv[0]).parse_args([*argv, "--size", "4096"]).size == 4096


def test_face_search_ranges_are_the_same_for_scan_and_serve():
    """min_face had no upper bound (100000: every video no_face, exit 0) and det_max_side took up
    to 8192 in a scan config but 4096 in serve's, under one key name."""
    from pydantic import ValidationError

    from scanner.config import ScanConfig
    from scanner.live.config import FaceConfig

    for cls in (ScanConfig, FaceConfig):
        with pytest.raises(ValidationError, match="min_face"):
            cls(min_face=100000)
        assert cls(min_face=8192, det_max_side=8192).det_max_side == 8192
