"""Figures and ``report/index.html`` of a mapping run: maps, PSD scores, learning curves, metrics."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from geodl.methods.mapping import read_sorted
from geodl.pipeline import StageContext

__all__ = ["write_mapping_report"]

#: What each fixed figure shows and how to read it (the report's captions).
CAPTIONS = {
    "psd_score.png": "PSD score along x over the test period, 1 - PSD(map - truth) / PSD(truth), "
    "against wavelength; dotted: each method's lambda_x, the shortest wavelength it resolves "
    "(where the score crosses 0.5).",
    "rmse_time.png": "RMSE of each map against the truth on each day of the test period.",
    "spectra.png": "x-spectra of the maps and of the truth over the test period: a map below the "
    "truth at high wavenumbers is smoother than it.",
    "reliability.png": "Reliability of the std: the fraction of test cells whose error lies "
    "within the central interval of each nominal coverage (on the diagonal: a calibrated std).",
    "oi_tuning.png": "OI tuning: validation RMSE over the searched scales (the best noise level "
    "at each), the chosen scales starred.",
}

#: Cells a side of the central window the figures of a larger grid show (memory: the figures
#: load the test period of the truth and of every map; metrics.json scores the whole grid).
REPORT_WINDOW = 512


def _window(ctx: StageContext, prep: dict[str, Any]) -> tuple[slice, slice] | None:
    """Rows and columns of the central :data:`REPORT_WINDOW` window, or None (the whole grid)."""
    import xarray as xr

    with xr.open_dataset(ctx.input("obs.nc")) as obs:  # the grid's sizes, nothing read
        ny, nx = (obs.sizes[d] for d in prep["dims"][1:])
    if max(ny, nx) <= REPORT_WINDOW:
        return None
    return tuple(  # type: ignore[return-value]
        slice(max(0, (n - REPORT_WINDOW) // 2), max(0, (n - REPORT_WINDOW) // 2) + REPORT_WINDOW)
        for n in (ny, nx)
    )


def _extent(field: Any, y_dim: str, x_dim: str) -> tuple[list[float], str, str]:
    """``imshow`` extent from the coordinates, and the axis labels with their units."""
    y, x = field[y_dim], field[x_dim]
    dy = float(y[1] - y[0]) if y.size > 1 else 1.0
    dx = float(x[1] - x[0]) if x.size > 1 else 1.0
    ext = [float(x[0]) - dx / 2, float(x[-1]) + dx / 2, float(y[0]) - dy / 2, float(y[-1]) + dy / 2]

    def label(c: Any, name: str) -> str:
        units = c.attrs.get("units", "")
        return f"{name} [{units}]" if units else name

    return ext, label(y, y_dim), label(x, x_dim)


def _date(field: Any, t_dim: str, day: int) -> str:
    if t_dim not in field.coords:
        return f"test day {day}"
    value = field[t_dim].values[day]
    text = (
        str(np.datetime_as_string(value, unit="D"))
        if np.issubdtype(np.asarray(value).dtype, np.datetime64)
        else f"{value:g}"
        if isinstance(value, int | float | np.number)
        else str(value)
    )
    return f"test day {day} ({t_dim} {text})"


def _maps(ctx: StageContext, prep: dict[str, Any], out: Any) -> list[tuple[str, str]]:
    """Per report day: truth, observations and each map (one shared colour scale and bar), the
    errors (a symmetric scale shared by every method) and the std where a method gives one (a
    shared scale), with the grid's coordinates on the axes and the date in the title."""
    import matplotlib.pyplot as plt

    cfg = ctx.cfg
    var = cfg.data.variable
    t_dim, y_dim, x_dim = prep["dims"]
    units = prep.get("units", "") or "field units"
    a, b = prep["splits"]["test"]
    truth_path = cfg.data.path or ctx.input("truth.nc")
    names: list[tuple[str, str]] = []
    test = slice(a, b)
    win = _window(ctx, prep)
    truth = read_sorted(truth_path, [var], prep["dims"], test, win)[var]
    obs = read_sorted(ctx.input("obs.nc"), [f"{var}_obs"], prep["dims"], test, win)[f"{var}_obs"]
    preds = {
        m: read_sorted(
            ctx.input(f"predictions/{m}.nc"), [var, f"{var}_std"], prep["dims"], space=win
        )
        for m in cfg.methods
    }
    # the axes of obs.nc, which prepare wrote with the grid's coordinates: a truth file may
    # have none (data.grid_spacing_km)
    ext, ylab, xlab = _extent(obs, y_dim, x_dim)
    for day in cfg.report.days:
        if day >= truth.sizes[t_dim]:
            ctx.log.warning(
                "report.days: %d lies beyond the test period's %d steps; showing its last day",
                day,
                truth.sizes[t_dim],
            )
            day = truth.sizes[t_dim] - 1
        tr = truth.isel({t_dim: day}).values
        lim = float(np.nanmax(np.abs(tr)))
        maps = {m: ds[var].isel({t_dim: day}).values for m, ds in preds.items()}
        errs = {m: v - tr for m, v in maps.items()}
        elim = max([float(np.nanpercentile(np.abs(e), 99)) for e in errs.values()] + [1e-12])
        stds = {
            m: ds[f"{var}_std"].isel({t_dim: day}).values
            for m, ds in preds.items()
            if f"{var}_std" in ds
        }
        slim = max([float(np.nanpercentile(v, 99)) for v in stds.values()] + [1e-12])
        cols = 2 + len(preds)
        fig, axes = plt.subplots(3, cols, figsize=(2.8 * cols, 7.8), squeeze=False)
        kw = {"origin": "lower", "extent": ext, "aspect": "auto"}
        field = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim, **kw}
        im_field = axes[0, 0].imshow(tr, **field)
        axes[0, 0].set_title("truth")
        # observations within +-2 days, as the maps of the field are usually shown
        window = obs.isel({t_dim: slice(max(day - 2, 0), day + 3)})
        axes[0, 1].imshow(window.mean(t_dim, skipna=True).values, **field)
        axes[0, 1].set_title("obs (+-2 days)")
        im_err = im_std = None
        for j, m in enumerate(preds, start=2):
            axes[0, j].imshow(maps[m], **field)
            axes[0, j].set_title(m)
            im_err = axes[1, j].imshow(errs[m], cmap="RdBu_r", vmin=-elim, vmax=elim, **kw)
            rmse = float(np.sqrt(np.nanmean(errs[m] ** 2)))
            axes[1, j].set_title(f"error {m} (rmse {rmse:.3g})", fontsize=8)
            if m in stds:
                im_std = axes[2, j].imshow(stds[m], cmap="viridis", vmin=0, vmax=slim, **kw)
                axes[2, j].set_title(f"std {m}", fontsize=8)
        for ax in axes.ravel():
            if not ax.images:
                ax.axis("off")  # nothing to show there (no error for truth, no std for unet)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylab, fontsize=7)
        for ax in axes[-1]:
            ax.set_xlabel(xlab, fontsize=7)
        for ax in axes.ravel():
            ax.tick_params(labelsize=6)
        fig.colorbar(im_field, ax=list(axes[0]), shrink=0.8, label=f"{var} [{units}]")
        if im_err is not None:
            fig.colorbar(im_err, ax=list(axes[1]), shrink=0.8, label=f"map - truth [{units}]")
        if im_std is not None:
            fig.colorbar(im_std, ax=list(axes[2]), shrink=0.8, label=f"std [{units}]")
        fig.suptitle(f"{var}, {_date(truth, t_dim, day)}")
        name = f"maps_day{day:03d}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        names.append(
            (
                name,
                f"{var} on {_date(truth, t_dim, day)}: the truth, the observations within +-2 "
                "days and each method's map on one colour scale; below, each map's error (map - "
                "truth) on a symmetric scale shared by the methods; then each std where a "
                "method gives one.",
            )
        )
    return names


def _over_time(ctx: StageContext, prep: dict[str, Any], out: Any) -> list[str]:
    """RMSE of every method over the test period; the reconstructions' x-spectra against the
    truth's; and, for methods with a std, the reliability of their central intervals."""
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    cfg = ctx.cfg
    var = cfg.data.variable
    t_dim, y_dim, x_dim = prep["dims"]
    units = prep.get("units", "")
    a, b = prep["splits"]["test"]
    truth_path = cfg.data.path or ctx.input("truth.nc")
    win = _window(ctx, prep)
    truth = read_sorted(truth_path, [var], prep["dims"], slice(a, b), win)[var]
    t = truth[t_dim].values if t_dim in truth.coords else np.arange(truth.sizes[t_dim])
    tr = truth.values
    ok_t = np.isfinite(tr)
    fig_r, ax_r = plt.subplots(figsize=(6.5, 3.5))
    fig_s, ax_s = plt.subplots(figsize=(6, 4))
    fig_c, ax_c = plt.subplots(figsize=(4.5, 4.5))
    nominal = np.linspace(0.1, 0.9, 9)
    reliable = False

    def spectrum(v: np.ndarray) -> np.ndarray:
        v = np.where(np.isfinite(v), v, 0.0)
        v = v - v.mean(-1, keepdims=True)
        return (np.abs(np.fft.rfft(v, axis=-1)) ** 2).mean(axis=(0, 1))

    dx = float(prep["grid"]["dx_km"])
    k = np.fft.rfftfreq(tr.shape[-1], d=dx)[1:]
    ax_s.loglog(k, spectrum(tr)[1:], "k", lw=2, label="truth")
    for m in cfg.methods:
        path = ctx.input(f"predictions/{m}.nc")
        ds = read_sorted(path, [var, f"{var}_std"], prep["dims"], space=win)
        pred = ds[var].reindex_like(truth).values
        ok = ok_t & np.isfinite(pred)
        err2 = np.where(ok, (pred - tr) ** 2, 0.0)
        rmse = np.sqrt(err2.sum((1, 2)) / np.maximum(ok.sum((1, 2)), 1))
        ax_r.plot(t, rmse, label=m)
        ax_s.loglog(k, spectrum(np.where(ok, pred, 0.0))[1:], label=m)
        if f"{var}_std" in ds:
            std = ds[f"{var}_std"].reindex_like(truth).values
            good = ok & np.isfinite(std) & (std > 0)
            z = np.abs(pred - tr)[good] / std[good]
            ax_c.plot(
                nominal, [(z <= norm.ppf(0.5 + p / 2)).mean() for p in nominal], "o-", label=m
            )
            reliable = True
    ax_r.set_ylabel(f"RMSE [{units}]" if units else "RMSE")
    ax_r.set_xlabel(t_dim)
    ax_r.set_title("RMSE over the test period")
    ax_r.legend(fontsize=8)
    fig_r.autofmt_xdate()
    fig_r.tight_layout()
    fig_r.savefig(out / "rmse_time.png", dpi=100)
    ax_s.set_xlabel("wavenumber along x [cycles per km]")
    ax_s.set_ylabel(f"power [{units}^2]" if units else "power")
    ax_s.set_title("x-spectra of the maps and of the truth (test period)")
    ax_s.legend(fontsize=8)
    fig_s.tight_layout()
    fig_s.savefig(out / "spectra.png", dpi=100)
    names = ["rmse_time.png", "spectra.png"]
    if reliable:
        ax_c.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax_c.set_xlabel("nominal coverage of the central interval")
        ax_c.set_ylabel("observed coverage (test period)")
        ax_c.set_title("reliability of the std")
        ax_c.legend(fontsize=8)
        fig_c.tight_layout()
        fig_c.savefig(out / "reliability.png", dpi=100)
        names.append("reliability.png")
    for fig in (fig_r, fig_s, fig_c):
        plt.close(fig)
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
    win = _window(ctx, prep)
    truth = read_sorted(truth_path, [var], prep["dims"], slice(a, b), win)[var]
    for m in cfg.methods:
        pred = read_sorted(ctx.input(f"predictions/{m}.nc"), [var], prep["dims"], space=win)[var]
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
    figures: list[tuple[str, str]] = _maps(ctx, prep, out)
    names = [_psd(ctx, prep, metrics, out), *_over_time(ctx, prep, out)]
    tuning = _oi_tuning(metrics, out)
    figures += [(n, CAPTIONS[n]) for n in (*names, *([tuning] if tuning else []))]
    for m in ctx.cfg.methods:
        logs = ctx.run_dir / "logs" / m
        if logs.exists():
            name = f"learning_curves_{m}.png"
            plot_learning_curves(logs, out / name, title=f"{m} learning curves")
            figures.append((name, f"{m}: its training and validation losses per epoch."))
    from geodl.config import dump_yaml

    notes = list(prep.get("warnings", []))
    win = _window(ctx, prep)
    if win is not None:
        rows, cols = win
        notes.append(
            f"the figures show the central {REPORT_WINDOW} x {REPORT_WINDOW} cells of the grid "
            f"(rows {rows.start}..{rows.stop - 1}, columns {cols.start}..{cols.stop - 1}); "
            "the metrics score all of it"
        )
    write_index(
        out,
        ctx.cfg.experiment.name,
        metrics,
        figures,
        warnings=notes,
        config=dump_yaml(ctx.cfg),
    )
