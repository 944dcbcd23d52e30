"""Outputs audit: hostile file names through a real scan into JSONL, CSV and the HTML report."""
from __future__ import annotations

import csv
import json
import os
from html.parser import HTMLParser

import pytest

from conftest import DATA
from scanner.cli import EXIT_INPUT_ERROR, main
from scanner.report import ReportOptions, write_report
from scanner.report.render import shown

FAST = ["--detector", "test_tiny", "--frames", "2", "--workers", "1", "--no-progress"]
# A name a browser would show as another one, or that ends a line somewhere.
DISGUISED = {"evil\u202egpj.mp4": "evil\\u202egpj.mp4", "zero\u200bwidth.mp4": "zero\\u200bwidth.mp4",
             "new\nline.mp4": "new\\nline.mp4", "tab\there.mp4": "tab\\there.mp4",
             "nb\xa0sp.mp4": "nb\\xa0sp.mp4", "iso\u2066late.mp4": "iso\\u2066late.mp4",
             "ls\u2028nel\x85ps\u2029.mp4": "ls\\u2028nel\\x85ps\\u2029.mp4"}
MARKUP = ['<script>alert(1)<', 'q"uote\'s <img src=x onerror=alert(1)>.mp4', "javascript:alert(1).mp4",
          "{{7*7}}`bt`.mp4", '=HYPERLINK("http:x","c").mp4', "+cmd.mp4", "-2+3.mp4", "@SUM(1).mp4"]


class _Page(HTMLParser):
    """Tags and attributes of a page, and the text of each ``td.path`` cell."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.paths, self._cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "td" and ("class", "path") in attrs:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.paths.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """One scan of hostile names (hard links to a real clip) into JSONL, CSV and HTML."""
    tmp = tmp_path_factory.mktemp("hostile")
    clips = tmp / "clips"
    (clips / MARKUP[0]).mkdir(parents=True)  # a folder: the name then holds "</script>"
    names = [*DISGUISED, *MARKUP[1:]]
    for n in names:
        os.link(DATA / "d1.mp4", clips / n)
    os.link(DATA / "d1.mp4", clips / MARKUP[0] / "script>.mp4")
    os.link(DATA / "d1.mp4", os.fsencode(clips) + b"/bad\xff.mp4")
    missing = clips / "gone\u202egpj.mp4"  # not_found: its message quotes the name
    outs = [tmp / "r.jsonl", tmp / "r.csv", tmp / "r.html"]
    code = main(["scan", str(clips), str(missing), *[a for o in outs for a in ("--out", str(o))], *FAST])
    assert code == EXIT_INPUT_ERROR  # the missing one
    expected = {str(clips / n) for n in names} | {str(clips / MARKUP[0] / "script>.mp4"),
                                                  os.fsdecode(os.fsencode(clips) + b"/bad\xff.mp4"), str(missing)}
    return outs, expected


def test_every_hostile_name_is_one_exact_row_in_jsonl_and_csv(scanned):
    (jsonl, csv_out, _), expected = scanned
    # str.splitlines(): U+2028/U+2029/U+0085 in a name split its row into two non-JSON lines.
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(expected) and {json.loads(ln)["path"] for ln in lines} == expected
    with open(csv_out, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(expected) and {r["path"] for r in rows} == expected
    # Formula injection: a spreadsheet evaluates a cell starting with = + - @ (or TAB/CR before
    # one). Rows carry absolute paths and messages start with words: no cell starts so.
    assert not [(k, v) for r in rows for k, v in r.items() if v and v[0] in "=+-@\t\r"]


def test_report_runs_no_script_of_a_name_and_shows_every_name_unambiguously(scanned):
    (_, _, html_out), expected = scanned
    html = html_out.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    assert page.tags.count("script") == 1 and not [a for a in page.attrs if a[0] == "script"]
    assert not [a for a in page.attrs if a[1].startswith("on")]
    assert {v for t, k, v in page.attrs if k == "href"} <= {f"#v{i}" for i in range(len(expected))}
    csp = next(v for t, k, v in page.attrs if t == "meta" and k == "content" and "default-src" in v)
    assert "default-src 'none'" in csp and "connect-src" not in csp
    # Shown: a bidi override turned "evil\u202egpj.mp4" into "evil4pm.jpg" on screen, a
    # newline or tab read as a space, a zero-width space as nothing.
    shown_names = {p.rsplit("/", 1)[1] for p in page.paths}
    assert len(page.paths) == len(expected)
    for raw, text in DISGUISED.items():
        assert text in shown_names and raw not in shown_names, raw
    assert "bad\\udcff.mp4" in shown_names
    assert '<span class="esc" title="U+202E RIGHT-TO-LEFT OVERRIDE">\\u202e</span>' in html
    err = html[html.index('<p class="errmsg">'):]
    assert "\u202e" not in err[:err.index("</p>")] and "gone<span" in err  # FFmpeg's message quoting it


def test_shown_marks_hidden_characters_and_leaves_a_literal_backslash_unmarked():
    assert shown("a<b>&\"c.mp4") == "a&lt;b&gt;&amp;&quot;c.mp4"
    for ch in "\u202e\u2066\u200b\u200d\ufeff\xa0\xad\u3164\u2028\x1b\r\udcff":
        out = shown(f"x{ch}y")
        assert ch not in out and out.startswith('x<span class="esc"') and out.endswith("</span>y"), repr(ch)
    assert shown("x\\u202ey") == "x\\u202ey"  # typed by the user: plain text, not a marked escape


def _row(path: str) -> dict:
    return {"path": path, "verdict": "real", "score": 0.1, "threshold": 0.5, "frames": 2,
            "frames_with_faces": 0, "faces": 0}


def test_report_says_why_each_kind_of_line_is_unreadable(tmp_path):
    """The page said "N unreadable line(s) skipped (e.g. a row torn by a kill)" whatever the
    reason: a foreign line, a hand-edited row and a cut-short end read alike."""
    good = json.dumps(_row("/v/a.mp4"))
    lines = [good, json.dumps({"event": "verdict", "stream": "cam1"}), json.dumps({**_row("/v/b.mp4"), "score": "high"}),
             json.dumps(_row("/v/c.mp4")), "{not json", json.dumps(_row("/v/d.mp4"))[:40]]
    res = tmp_path / "r.jsonl"
    res.write_text("\n".join(lines), encoding="utf-8")  # the last line cut short, no newline
    write_report(res, tmp_path / "r.html", ReportOptions(thumbnails=False))
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    note = html[html.index("4 unreadable line(s)"):].split("</p>", 1)[0]
    assert "no dfscan result row (no path and verdict" in note and "line 2" in note
    assert "a field of another type than dfscan writes" in note and "line 3" in note
    assert "not JSON" in note and "line 5" in note
    assert "cut short at the end of the file" in note and "line 6" in note
    assert "e.g. a row torn by a kill" not in note


def test_a_file_of_no_result_row_is_refused_naming_why(tmp_path, capsys):
    res = tmp_path / "events.jsonl"
    res.write_text("".join(json.dumps({"event": "verdict", "n": i}) + "\n" for i in range(5)), encoding="utf-8")
    assert main(["report", str(res), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "no path and verdict" in err and "line 1, 2, 3 and 2 more" in err and len(err.strip().splitlines()) == 1


def test_terminal_shows_invisible_characters_of_a_name_as_escapes():
    """`zero\u200bwidth.mp4` printed exactly like `zerowidth.mp4` on the scan's terminal lines;
    the terminal and the report now mark the same characters."""
    from scanner.terminal import terminal_safe

    for ch in ("\u200b", "\u00a0", "\ufeff", "\u2060", "\u202e", "\x1b"):
        name = f"zero{ch}width.mp4"
        assert terminal_safe(name) == "zero" + ch.encode("unicode_escape").decode() + "width.mp4"
        assert "<span class=\"esc\"" in shown(name)
    assert terminal_safe("plain näme – ok.mp4") == "plain näme – ok.mp4"
