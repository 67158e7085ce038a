"""QG emulation benchmark: forecast RMSE against lead for each emulator, persistence and a coarse QG
run; KE-spectrum error of long rollouts; wall-clock speed-up of the emulators over the simulator.

Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/emulation.py --config configs/qg_emulation_quick.yaml
    .venv/bin/python benchmarks/emulation.py --config configs/qg_emulation.yaml --out /tmp/emu_full
    .venv/bin/python benchmarks/emulation.py --config ... --set cnn.train.max_epochs=5 --force

Runs the ``emulation`` task (geodl.tasks.emulation) into ``--out`` (default
``runs/bench_emulation/NAME``; stages already done with the same settings are reused unless
``--force``), then prints Markdown tables: RMSE (normalised: 1 = one training standard deviation)
at every lead, the targets (emulator below persistence at every lead up to 10 days; speed-up
recorded) met or missed and by how much, the speed-ups, spectra and divergence, the wall time of
each stage, the load average, and a JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

from geodl.pipeline import run_experiment
from geodl.tasks import load_config

BASELINES = ("persistence", "coarse_sim")


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "" if x is None else format(x, spec)


def tables(metrics: dict, coarse_nx: int, nx: int) -> list[str]:
    """The Markdown lines of the result tables."""
    lead = metrics["lead_days"]
    curves = metrics["rmse_vs_lead"]
    methods = metrics["methods"]
    names = [*BASELINES, *(n for n in curves if n not in BASELINES)]
    label = {"coarse_sim": f"QG at {coarse_nx}x{coarse_nx}"}
    out = [
        f"| lead (days) | {' | '.join(label.get(n, n) for n in names)} |",
        f"|---|{'---|' * len(names)}",
    ]
    for j, d in enumerate(lead):
        cells = [_fmt(curves[n][j]) if j < len(curves[n]) else "(diverged)" for n in names]
        out.append(f"| {d:g} | {' | '.join(cells)} |")
    out += [
        "",
        "| method | beats persistence at every lead <= 10 d | worst RMSE / persistence (lead) | "
        "speed-up CPU | speed-up GPU | KE spectrum error (mean abs log10) | KE ratio | "
        "long rollout |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names[1:]:
        m = methods[n]
        beats = m.get("beats_persistence_all_leads")
        ratio = m.get("max_rmse_ratio_to_persistence")
        worst = f"{ratio:.3f} (day {m['worst_lead_day']:g})" if ratio is not None else ""
        if beats == 0.0 and ratio is not None:
            worst += f": missed by {100 * (ratio - 1):.0f}%" if ratio >= 1 else ""
        if "diverged" in m:
            roll = (
                f"left at step {m['diverged_at_step']:g} (day {m['diverged_at_day']:g})"
                if m["diverged"]
                else f"stable, {m['rollout_days']:g} days"
            )
        else:
            roll = "(simulator)"
        out.append(
            f"| {label.get(n, n)} | {'yes' if beats else 'no'} | {worst} | "
            f"{_fmt(m.get('speedup_cpu'), '.1f')} | {_fmt(m.get('speedup_gpu'), '.1f')} | "
            f"{_fmt(m.get('spectrum_log10_error'), '.3f')} | {_fmt(m.get('ke_ratio_to_truth'), '.2f')}"
            f" | {roll} |"
        )
    out.append("")
    floor = metrics.get("spectrum_log10_error_truth_halves")
    out.append(
        f"KE spectrum error between the two halves of the test truth (sampling floor): {floor:.3f}"
    )
    setup = metrics["timing_setup"]
    times = "; ".join(
        f"{dev}: " + ", ".join(f"{k} {v:.3g} s" for k, v in t.items())
        for dev, t in metrics["timing_s"].items()
    )
    out.append(
        f"Timing ({setup['forecasts']} forecasts of {setup['lead_days']:g} days together, "
        f"{setup['simulator_steps']} simulator steps at {nx}x{nx} in {setup['simulator_dtype']}, "
        f"emulators in {setup['emulator_dtype']}, {setup['threads']} CPU thread(s), best of the "
        f"repeats): {times}"
    )
    return out


def timing_only(cfg, args) -> None:
    """Speed-up at the config's grid and model sizes without training: a forecast's cost does not
    depend on the weights' values. Initial states: small random PV (the simulator) and standard
    normal fields (the emulators)."""
    import torch

    from geodl.methods.emulation import (
        build_emulator,
        build_qg,
        forecast_timings,
        n_saved,
        steps_per_save,
    )
    from geodl.tasks.emulation import check_config

    check_config(cfg)
    s, ev = cfg.simulate, cfg.evaluate
    n = ev.timing_forecasts
    qg = build_qg(s.preset, nx=s.nx, length_km=s.L_km, dt=s.dt)
    coarse = build_qg(
        s.preset,
        nx=s.nx // ev.coarse_factor,
        length_km=s.L_km,
        dt=s.dt,
        filterfac=ev.coarse_filterfac,
    )
    q0 = qg.initial_pv(n, seed=0, amplitude=1e-6)
    x0 = torch.randn(n, 2, s.nx, s.nx, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    sections = {m: getattr(cfg, m) for m in cfg.methods}
    models = {m: build_emulator(m, sections[m], 2, s.nx).eval() for m in cfg.methods}
    load0 = os.getloadavg()
    timing = forecast_timings(
        models,
        sections,
        q0,
        x0,
        fine=qg,
        coarse=coarse,
        n_lead=n_saved(ev.lead_days, s.save_every_days, "evaluate.lead_days"),
        every=steps_per_save(s.save_every_days, s.dt),
        repeats=ev.timing_repeats,
        threads=ev.threads,
        gpu=ev.gpu_timing,
    )
    names = ["simulator", "coarse_sim", *models]
    lines = [
        f"`{args.config}` timing only ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC): {n} "
        f"forecasts of {ev.lead_days:g} days at {s.nx}x{s.nx}, {ev.threads} CPU thread(s), "
        f"best of {ev.timing_repeats}; untrained weights",
        "",
        f"| device | {' | '.join(f'{k} (s)' for k in names)} | "
        f"{' | '.join(f'speed-up {k}' for k in names[1:])} |",
        f"|---|{'---|' * (2 * len(names) - 1)}",
    ]
    for dev, t in timing.items():
        lines.append(
            f"| {dev} | {' | '.join(f'{t[k]:.3g}' for k in names)} | "
            + " | ".join(f"{t['simulator'] / t[k]:.1f}" for k in names[1:])
            + " |"
        )
    lines.append(
        f"Load average at start: {', '.join(f'{x:.2f}' for x in load0)}; at end: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    text = "\n".join(lines)
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/qg_emulation_quick.yaml")
    p.add_argument("--out", default=None)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--force", action="store_true", help="re-run every stage")
    p.add_argument("--md", default=None, help="also write the tables to this Markdown file")
    p.add_argument(
        "--timing-only",
        action="store_true",
        help="time simulator vs untrained emulators at the config's sizes (no training)",
    )
    args = p.parse_args()
    cfg, exp = load_config(args.config, args.overrides)
    if args.timing_only:
        timing_only(cfg, args)
        return
    out = Path(args.out or f"runs/bench_emulation/{cfg.experiment.name}")
    load0 = os.getloadavg()
    start = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    result = run_experiment(
        cfg, exp, out, force=[s.name for s in exp.resolve(cfg).stages][:1] if args.force else ()
    )
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    metrics = json.loads((out / "metrics.json").read_text())
    stages = {s["name"]: s["duration_s"] for s in result.manifest["stages"]}
    s = cfg.simulate
    lines = [
        f"`{args.config}` {' '.join('--set ' + o for o in args.overrides)} -> {out} ({start})",
        "",
        f"QG {s.preset}, {s.nx}x{s.nx} on {s.L_km:g} km, dt {s.dt:g} s, spin-up {s.spinup_days:g} "
        f"days, saved every {s.save_every_days:g} day(s); train {s.train_days:g} / val "
        f"{s.val_days:g} / test {s.test_days:g} days; variable {s.variable} (both layers); "
        f"methods {', '.join(cfg.methods)}; {len(metrics['lead_days']) - 1} leads, "
        f"{cfg.evaluate.n_forecasts} forecasts.",
        "",
        *tables(metrics, metrics["coarse_nx"], s.nx),
        "",
        "Stage wall times (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        + f"; total {wall:.1f} (stages reused from an earlier run count as ~0)",
        f"Load average (1, 5, 15 min): at start {', '.join(f'{x:.2f}' for x in load0)}; at end "
        f"{', '.join(f'{x:.2f}' for x in load1)}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    print(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.overrides,
                "methods": metrics["methods"],
                "stages_s": stages,
                "wall_s": round(wall, 1),
                "load": [load0, load1],
            }
        )
    )


if __name__ == "__main__":
    main()
