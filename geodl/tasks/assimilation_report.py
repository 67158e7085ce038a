"""Figures, table and ``report/index.html`` of an assimilation run: trajectories, learning curves,
the DAPPER-convention tables of scores (filters and smoothers apart)."""

from __future__ import annotations

import json
from typing import Any

import xarray as xr

from geodl.pipeline import StageContext

__all__ = ["dapper_table", "write_assimilation_report"]


def write_assimilation_report(ctx: StageContext) -> None:
    """Write ``report/`` of the ``report`` stage: ``trajectories.png`` (truth, observations and
    every method's estimate of the first trajectory), ``learning_curves.png`` (if 4DVarNet was
    trained), ``table.md`` (:func:`dapper_table`) and ``index.html``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geodl.report import plot_learning_curves, write_index

    report_dir = ctx.output("report")
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(ctx.input("metrics.json").read_text())
    figures = ["trajectories.png"]
    with (
        xr.open_dataset(ctx.input("truth.nc")) as t,
        xr.open_dataset(ctx.input("obs.nc")) as o,
        xr.open_dataset(ctx.input("analysis.nc")) as a,
    ):
        time_ = t["time"].values
        n_show = min(len(time_), 500)
        fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
        for comp, ax in enumerate(axes):
            if comp >= t.sizes["component"]:
                break
            ax.plot(time_[:n_show], t["truth"][0, :n_show, comp], "k", lw=1.2, label="truth")
            ax.plot(time_[:n_show], o["obs"][0, :n_show, comp], "r.", ms=4, label="obs")
            for name in a.data_vars:
                ax.plot(time_[:n_show], a[name][0, :n_show, comp], lw=0.8, label=str(name))
            ax.set_ylabel(f"x{comp}")
        axes[0].legend(loc="upper right", fontsize=8, ncol=4)
        axes[-1].set_xlabel("time (model units)")
        fig.tight_layout()
        fig.savefig(report_dir / "trajectories.png", dpi=100)
        plt.close(fig)
    logs = ctx.run_dir / "logs" / "fourdvarnet"
    if logs.exists() and any(logs.rglob("metrics.csv")):
        plot_learning_curves(logs, report_dir / "learning_curves.png", "fourdvarnet training")
        figures.append("learning_curves.png")
    (report_dir / "table.md").write_text(dapper_table(metrics))
    write_index(report_dir, ctx.cfg.experiment.name, metrics, figures)


def dapper_table(metrics: dict[str, Any]) -> str:
    """Markdown tables in DAPPER's convention, filters apart from smoothers (like with like):
    ``rmse_a`` (and ``spread_a``) of the filter analyses, ``rmse_s`` (and ``rmse_u``, every step)
    of the smoother estimates, each the time mean of the instantaneous RMSE, mean ± std over
    trajectories; the observations' own error at analysis times last.

    Examples
    --------
    >>> m = {"methods": {"enkf": {"rmse_a": 0.6, "rmse_a_std": 0.05, "spread_a": 0.5},
    ...                  "observations": {"rmse_analysis_dapper": 1.3}}}
    >>> print(dapper_table(m).splitlines()[4])
    | enkf | 0.600 ± 0.050 | 0.500 |
    """

    def cell(m: dict[str, float], key: str) -> str:
        if key not in m:
            return "-"
        return f"{m[key]:.3f} ± {m[key + '_std']:.3f}" if key + "_std" in m else f"{m[key]:.3f}"

    methods = {k: v for k, v in metrics["methods"].items() if k != "observations"}
    filters = [
        f"| {k} | {cell(m, 'rmse_a')} | {cell(m, 'spread_a')} |"
        for k, m in methods.items()
        if "rmse_a" in m
    ]
    smoothers = [
        f"| {k} | {cell(m, 'rmse_s')} | {cell(m, 'rmse_u')} |"
        for k, m in methods.items()
        if "rmse_s" in m
    ]
    lines: list[str] = []
    if filters:  # a table only for a kind that some method gives
        lines += ["Filters (past observations only), DAPPER's rmse.a:", ""]
        lines += ["| method | rmse_a | spread_a |", "|---|---|---|", *filters, ""]
    if smoothers:
        lines += [
            "Smoothers (observations before and after), DAPPER's rmse.s (analysis times) and "
            "rmse.u (every step):",
            "",
        ]
        lines += ["| method | rmse_s | rmse_u |", "|---|---|---|", *smoothers, ""]
    obs = metrics["methods"].get("observations", {})
    if "rmse_analysis_dapper" in obs:
        lines.append(f"Observations at analysis times: {obs['rmse_analysis_dapper']:.3f}.")
    return "\n".join(lines) + "\n"
