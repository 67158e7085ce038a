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


def test_bounds_are_marked_not_shown_as_measured():
    metrics = {
        "methods": {
            "oi": {"rmse": 1.0, "lambda_x": 500.0},
            "unet": {"rmse": 0.5, "lambda_x": 60.0, "lambda_x_ratio_oi": 0.12},
        },
        "bounds": {"oi": {"lambda_x": ">="}, "unet": {"lambda_x_ratio_oi": "<="}},
    }
    text = metrics_table_text(metrics)
    assert "| oi | 1 | >= 500 |" in text and "<= 0.12" in text and "| 60 |" in text
    assert "a bound, not a measured resolution" in text
    html = metrics_table_html(metrics)
    assert "&gt;= 500" in html and "a bound" in html
    assert "bound" not in metrics_table_text({"methods": metrics["methods"]})


def test_score_reports_the_bound_side_instead_of_warning():
    import warnings

    import numpy as np
    import xarray as xr

    from geodl.metrics import score

    rng = np.random.default_rng(0)
    truth = xr.DataArray(rng.normal(size=(16, 8, 16)), dims=("time", "y", "x"))
    bounds: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning escapes when bounds are asked for
        good = score(truth + 0.01 * rng.normal(size=truth.shape), truth, bounds=bounds)
    assert bounds == {"lambda_x": "<=", "lambda_t": "<="}  # white noise, finely resolved
    assert good["lambda_x"] == 2.0  # the Nyquist wavelength of unit cells
    bounds = {}
    score(xr.zeros_like(truth) + rng.normal(size=truth.shape), truth, bounds=bounds)
    assert set(bounds.values()) <= {">=", "<="} and bounds  # nothing resolved: at least the domain


def test_metrics_json_records_bounds_and_ratio_sides(tmp_path):
    import numpy as np
    import xarray as xr

    from geodl.methods.mapping import score_reconstructions

    rng = np.random.default_rng(1)
    dims = ("time", "y", "x")
    coords = {"time": np.arange(16.0), "y": np.arange(8.0) * 10, "x": np.arange(16.0) * 10}
    truth = xr.DataArray(rng.normal(size=(16, 8, 16)), dims=dims, coords=coords, name="ssh")
    truth.to_dataset().to_netcdf(tmp_path / "truth.nc")
    paths = {}
    for name, pred in (("oi", truth * 0 + 0.1), ("unet", truth + 0.01)):
        paths[name] = tmp_path / f"{name}.nc"
        pred.to_dataset(name="ssh").to_netcdf(paths[name])
    prep = {
        "variable": "ssh",
        "dims": list(dims),
        "splits": {"test": [0, 16]},
        "grid": {"kind": "projected", "dx_km": 10.0},
    }
    m = score_reconstructions(tmp_path / "truth.nc", paths, prep, reference="oi")
    assert m["bounds"]["unet"]["lambda_x"] == "<="
    assert m["bounds"]["oi"]["lambda_x"] == ">="  # a constant map resolves nothing
    assert m["bounds"]["unet"]["lambda_x_ratio_oi"] == "<="  # small over at least big
    json.dumps(m)
