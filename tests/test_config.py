"""``--config FILE.yaml`` of dfscan scan and dfscan serve: what a file can get wrong."""
from __future__ import annotations

import pytest

from scanner.cli import main


def _fails_in_one_line(argv: list[str], capsys, *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dfscan: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


def test_a_scan_config_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    """A config saved as Latin-1 (a comment with an accent) raised UnicodeDecodeError, which
    is no OSError or YAMLError: a traceback instead of a usage error."""
    cfg = tmp_path / "scan.yaml"
    cfg.write_bytes("frames: 8  # \xe9chantillons\n".encode("latin-1"))
    _fails_in_one_line(["scan", "--config", str(cfg), "--no-progress"], capsys, str(cfg), "not UTF-8")


@pytest.mark.parametrize("text, words", [
    ("max_streams: 4\nmax_streams: 8\n", ["max_streams", "given twice"]),
    ("defaults:\n  sample_fps: yes\n", ["defaults.sample_fps", "true/false"]),
    ("verdict:\n  min_samples: true\n", ["verdict.min_samples", "true/false"]),
    ("faces:\n\tmin_face: 8\n", ["line 2"]),
    ("max_streams: 4  # d\xe9mo\n", ["not UTF-8"]),
])
def test_a_serve_config_refuses_what_the_scan_config_refuses(tmp_path, text, words):
    """dfscan serve read its file with yaml.safe_load: a key given twice silently kept the
    last value, `sample_fps: yes` became 1 frame/s, a tab was a five-line error and a
    Latin-1 file a traceback (dfscan scan refuses each in one line)."""
    from scanner.live.config import ConfigError, load_config

    cfg = tmp_path / "serve.yaml"
    cfg.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
