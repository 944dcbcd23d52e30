"""``dfscan report``: self-contained HTML reports and the live status page.

:func:`write_report` renders a JSONL results file (header, sortable/filterable
table, per-video timeline, face thumbnails, artifact boxes, Grad-CAM views);
:func:`render_html` does the same for rows in memory;
:func:`scanner.report.status_page.status_html` is the page ``dfscan serve``
shows at ``/``.
"""
from .render import ReportOptions, render_html, write_report
from .rows import load_rows, summarise

__all__ = ["ReportOptions", "load_rows", "render_html", "summarise", "write_report"]
