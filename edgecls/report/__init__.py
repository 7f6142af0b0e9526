"""Report: one comparison of every variant on every device, from `edgecls bench` JSON files.

    >>> from edgecls.report import Report
    >>> report = Report.load(["workstation.json", "pi.json"])
    >>> report.write("report/")      # report.md, report.csv, report.json, report.html, plots/*.png

model.py holds the rows every renderer shares (`Report.rows`); tables.py renders Markdown and CSV,
plots.py the PNG plots (matplotlib, headless Agg backend), html.py the self-contained page.
"""
from .model import COLUMNS, Report, _check_report, device_label  # noqa: F401
from .plots import latency_scale  # noqa: F401

__all__ = ["Report", "COLUMNS", "device_label", "latency_scale"]
