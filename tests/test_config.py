"""``--config FILE.yaml`` of dfscan scan and dfscan serve: what a file can get wrong."""
from __future__ import annotations

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
