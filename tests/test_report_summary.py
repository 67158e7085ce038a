"""The metrics table reads as the field reads it, and `geodl run` ends with it."""

from __future__ import annotations

import json

from geodl.cli import _print_summary
from geodl.report import metrics_table_html, metrics_table_text

METRICS = {
    "task": "mapping",
    "methods": {
        "oi": {"crps": 0.002, "coverage_68": 0.68, "mu": 0.68, "lambda_x": 92.0, "rmse": 0.0048},
        "unet": {"mu": 0.71, "rmse": 0.0044, "lambda_x": 83.0, "rmse_ratio_oi": 0.91},
    },
    "units": {"rmse": "m", "lambda_x": "km"},
    "oi_tuning": {"grid": [1, 2]},
}


def test_columns_in_the_field_order_not_alphabetical():
    text = metrics_table_text(METRICS)
    head = text.splitlines()[0]
    assert head == (
        "| method | rmse [m] | mu | lambda_x [km] | coverage_68 | crps | rmse_ratio_oi |"
    )
    assert text.splitlines()[3].startswith("| unet | 0.0044 | 0.71 | 83 |  |  | 0.91 |")
    html = metrics_table_html(METRICS)
    assert html.index("rmse [m]") < html.index("mu") < html.index("crps")


def test_nested_or_empty_metrics_give_no_broken_rows():
    assert metrics_table_text({"methods": {}}) == ""
    nested = {"methods": {"etkf": {"a": {"rmse": 1.0}}, "x": {"rmse": 0.5}}}
    assert metrics_table_text(nested).splitlines()[-1] == "| x | 0.5 |"


def test_run_summary_prints_the_table_and_report(tmp_path, capsys):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("<html></html>")
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    _print_summary(tmp_path)
    out = capsys.readouterr().out
    assert "| oi | 0.0048 | 0.68 | 92 | 0.68 | 0.002 |  |" in out
    assert out.rstrip().endswith(f"[geodl] report: {tmp_path / 'report' / 'index.html'}")
    _print_summary(tmp_path / "missing")  # a run without metrics prints nothing
    assert capsys.readouterr().out == ""
