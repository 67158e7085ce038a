"""Figures and ``report/index.html`` of a mapping run: maps, PSD scores, learning curves, metrics."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from geodl.methods.mapping import read_sorted
from geodl.pipeline import StageContext

__all__ = ["write_mapping_report"]


def _maps(ctx: StageContext, prep: dict[str, Any], out: Any) -> list[str]:
    import matplotlib.pyplot as plt

    cfg = ctx.cfg
    var = cfg.data.variable
    t_dim = prep["dims"][0]
    a, b = prep["splits"]["test"]
    truth_path = cfg.data.path or ctx.input("truth.nc")
    names = []
    test = slice(a, b)
    truth = read_sorted(truth_path, [var], prep["dims"], test)[var]
    obs = read_sorted(ctx.input("obs.nc"), [f"{var}_obs"], prep["dims"], test)[f"{var}_obs"]
    preds = {
        m: read_sorted(ctx.input(f"predictions/{m}.nc"), [var, f"{var}_std"], prep["dims"])
        for m in cfg.methods
    }
    for day in cfg.report.days:
        day = min(max(day, 0), truth.sizes[t_dim] - 1)
        tr = truth.isel({t_dim: day}).values
        lim = np.nanmax(np.abs(tr))
        cols = 2 + len(preds)
        fig, axes = plt.subplots(3, cols, figsize=(2.6 * cols, 7.2), squeeze=False)
        kw = {"origin": "lower", "cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
        axes[0, 0].imshow(tr, **kw)
        axes[0, 0].set_title("truth")
        # observations within +-2 days, as the maps of the field are usually shown
        window = obs.isel({t_dim: slice(max(day - 2, 0), day + 3)})
        axes[0, 1].imshow(window.mean(t_dim, skipna=True).values, **kw)
        axes[0, 1].set_title("obs (+-2 days)")
        for j, (m, ds) in enumerate(preds.items(), start=2):
            mean = ds[var].isel({t_dim: day}).values
            axes[0, j].imshow(mean, **kw)
            axes[0, j].set_title(m)
            err = mean - tr
            axes[1, j].imshow(err, origin="lower", cmap="RdBu_r", vmin=-lim / 2, vmax=lim / 2)
            rmse = float(np.sqrt(np.nanmean(err**2)))
            axes[1, j].set_title(f"error {m} (rmse {rmse:.3g})", fontsize=8)
            if f"{var}_std" in ds:
                im = axes[2, j].imshow(
                    ds[f"{var}_std"].isel({t_dim: day}).values, origin="lower", cmap="viridis"
                )
                axes[2, j].set_title(f"std {m}", fontsize=8)
                fig.colorbar(im, ax=axes[2, j], shrink=0.7)
        for ax in axes.ravel():
            if not ax.images:
                ax.axis("off")  # nothing to show there (no error for truth, no std for unet)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{var}, test day {day}")
        fig.tight_layout()
        name = f"maps_day{day:03d}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        names.append(name)
    return names


def _psd(ctx: StageContext, prep: dict[str, Any], metrics: dict[str, Any], out: Any) -> str:
    import matplotlib.pyplot as plt

    from geodl.metrics import psd_score

    cfg = ctx.cfg
    var = cfg.data.variable
    t_dim, y_dim, x_dim = prep["dims"]
    a, b = prep["splits"]["test"]
    dims = {"time_dim": t_dim, "y_dim": y_dim, "x_dim": x_dim}
    dx = prep["grid"]["dx_km"] if prep["grid"]["kind"] == "projected" else None
    fig, ax = plt.subplots(figsize=(6, 4))
    truth_path = cfg.data.path or ctx.input("truth.nc")
    truth = read_sorted(truth_path, [var], prep["dims"], slice(a, b))[var]
    for m in cfg.methods:
        pred = read_sorted(ctx.input(f"predictions/{m}.nc"), [var], prep["dims"])[var]
        pred = pred.reindex_like(truth)
        spec = psd_score(pred, truth, dx=dx, **dims)
        k, s = spec["wavenumber_x"], spec["score_x"]
        (line,) = ax.semilogx(1 / k, s, label=m)
        lam = metrics["methods"][m]["lambda_x"]
        ax.axvline(lam, color=line.get_color(), ls=":", lw=1)
    ax.axhline(0.5, color="k", lw=0.8)
    unit = metrics["units"].get("lambda_x", "")
    ax.set_xlabel(f"wavelength ({unit})")
    ax.set_ylabel("PSD score 1 - PSD(err)/PSD(truth)")
    ax.set_ylim(-0.1, 1.05)
    ax.legend()
    ax.set_title("PSD score along x (dotted: lambda_x)")
    fig.tight_layout()
    fig.savefig(out / "psd_score.png", dpi=100)
    plt.close(fig)
    return "psd_score.png"


def _oi_tuning(metrics: dict[str, Any], out: Any) -> str | None:
    """Validation RMSE over the searched OI scales, the choice marked."""
    tuning = metrics.get("oi_tuning", {}).get("tuning")
    if not tuning:
        return None
    import matplotlib.pyplot as plt

    grid = tuning["grid"]
    lxs = sorted({g["lx"] for g in grid})
    lts = sorted({g["lt"] for g in grid})
    table = np.full((len(lts), len(lxs)), np.nan)
    for g in grid:  # the best noise level at each (lx, lt)
        i, j = lts.index(g["lt"]), lxs.index(g["lx"])
        table[i, j] = np.fmin(table[i, j], g["rmse"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    im = ax.imshow(table, origin="lower", cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(lxs)), [f"{v:.0f}" for v in lxs])
    ax.set_yticks(range(len(lts)), [f"{v:.1f}" for v in lts])
    chosen = metrics["oi_tuning"]["params"]
    ax.plot(lxs.index(chosen["lx"]), lts.index(chosen["lt"]), "r*", ms=14, label="chosen")
    ax.set_xlabel("lx (km)")
    ax.set_ylabel("lt (days)")
    ax.set_title("OI: validation RMSE over the searched scales")
    ax.legend(loc="upper right")
    fig.colorbar(im, ax=ax, label="validation RMSE")
    fig.tight_layout()
    fig.savefig(out / "oi_tuning.png", dpi=100)
    plt.close(fig)
    return "oi_tuning.png"


def write_mapping_report(ctx: StageContext) -> None:
    """Write every figure and ``index.html`` into the stage's ``report`` output."""
    import matplotlib

    matplotlib.use("Agg")
    from geodl.report import plot_learning_curves, write_index

    out = ctx.output("report")
    out.mkdir(parents=True, exist_ok=True)
    prep = json.loads(ctx.input("prepare.json").read_text())
    metrics = json.loads(ctx.input("metrics.json").read_text())
    figures = _maps(ctx, prep, out)
    figures.append(_psd(ctx, prep, metrics, out))
    tuning = _oi_tuning(metrics, out)
    if tuning:
        figures.append(tuning)
    for m in ctx.cfg.methods:
        logs = ctx.run_dir / "logs" / m
        if logs.exists():
            name = f"learning_curves_{m}.png"
            plot_learning_curves(logs, out / name, title=f"{m} learning curves")
            figures.append(name)
    write_index(out, ctx.cfg.experiment.name, metrics, figures)
