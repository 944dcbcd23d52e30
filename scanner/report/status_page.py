"""The live status page ``dfscan serve`` shows at ``/``.

A static, self-contained page (the report's style, no external asset) whose
script polls ``GET /streams`` every 2 s and lists each stream's state, fps,
drops and rolling verdict. It holds no data itself, so it can be served
without a token; the API calls it makes carry the bearer token when one is
set (see ``assets/status.js``). The Content-Security-Policy lets it talk to
its own origin only.
"""
from __future__ import annotations

from functools import lru_cache
from html import escape

from .. import __version__
from .render import _asset, csp

COLUMNS = ("stream", "url", "state", "for", "fps", "sampled", "dropped", "reconnects", "faces",
           "score", "verdict", "tracks", "last error")
EXTRA_CSS = """
#api-status.ok{color:var(--real)}#api-status.bad{color:var(--fake);font-weight:600}
.badge.live{background:var(--real)}.badge.connecting,.badge.backoff{background:#8d6e00}
.badge.stalled{background:var(--fake)}.badge.stopped{background:#555}
td.err{white-space:normal;color:var(--error);font-size:12.5px;max-width:320px;overflow-wrap:anywhere}
form#token-form{margin:8px 0}
#streams td.path{min-width:300px;font-family:ui-monospace,Menlo,monospace;font-size:12px}
"""


@lru_cache(maxsize=1)
def status_html() -> str:
    """The status page as one HTML string (``text/html; charset=utf-8``)."""
    head, script = "".join(f"<th>{c}</th>" for c in COLUMNS), _asset("status.js")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp(script, connect_self=True)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>dfscan live</title><style>{_asset("report.css")}{EXTRA_CSS}</style></head><body>'
        '<header><div><h1>dfscan live <small><span id="stream-count">0</span> streams</small></h1>'
        '<p>Refreshed every 2 s from <code>GET /streams</code> · <span id="api-status">loading…</span></p>'
        '<form id="token-form" hidden><label>API token <input name="token" type="password" '
        'autocomplete="off"></label> <button type="submit">use</button></form></div></header>'
        f'<section class="overview"><table class="videos" id="streams"><thead><tr>{head}</tr></thead>'
        '<tbody></tbody></table></section>'
        f'<footer>dfscan {escape(__version__)} · JSON API: /streams, /healthz, /readyz, /metrics</footer>'
        f'<script>{script}</script></body></html>')
