"""Peak memory and wall time of the mapping experiment against grid size (issue 17).

For each size N, a synthetic N x N x T float32 field (:func:`geodl.testing.write_large_field`,
10 km cells, Zarr chunks time=30, y=250, x=250) is generated once under ``--data`` and mapped
as a user would: ``data.path`` = the store, 4 nadir altimeters, methods ``oi`` and a tiny
``unet`` (a few training steps). OI is tuned on the validation period (on its central 256 x 256
cells, ``oi.tune.window``) with the noise searched too (``noise_factors`` 1, 3, 10, 30 of the
1 cm instrument noise: the field's 0.1 white noise is below any grid's resolution, an error OI
must count as noise); ``--oi-untuned`` gives the earlier setting (prepare's scales, no search),
``--oi-scales LX LT`` the same scales at every size (km, days; no search), which measures how
OI's cost grows with the grid alone.
Every stage runs as its own ``geodl stage NAME CONFIG --out DIR`` subprocess under
``/usr/bin/time -v``, which gives the stage's peak RSS ("Maximum resident set size"), wall time
and CPU time (user + system: steadier than the wall time on shared cores). Prints one table per
size and writes every number to ``--json``.

Example::

    OMP_NUM_THREADS=1 python benchmarks/large_grid.py --sizes 250 500 --json /tmp/large.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("prepare", "train_oi", "train_unet", "predict_oi", "predict_unet", "evaluate", "report")

CONFIG = """\
experiment: {{name: large_grid_{n}, task: mapping, seed: 0}}
data: {{path: {path}, variable: ssh, land_mask: land_mask}}
obs: {{kind: nadir, n_satellites: 4, noise_std: 0.01, seed: 0}}
split: {{train: [0, {train}], val: [{val0}, {val1}], test: [{test0}, {test1}]}}
patch: {{time: 5, y: 64, x: 64, stride_time: 5}}
methods: [{methods}]
oi: {{max_obs: 200, tile_space: 32, tune: {oi_tune}}}
unet:
  model: {{depth: 1, width: 4}}
  calibrate: false
  train: {{max_epochs: 1, max_steps: 4, batch_size: 4, progress_bar: false}}
report: {{days: [0]}}
"""


def _splits(nt: int) -> dict[str, int]:
    """Train on the first two thirds, then validation and test, one window (5 steps) apart."""
    test1 = nt - 1
    test0 = max(nt - 35, 2 * nt // 3 + 12)
    val1 = test0 - 6
    val0 = max(val1 - 29, 2 * nt // 3)
    return {"train": val0 - 6, "val0": val0, "val1": val1, "test0": test0, "test1": test1}


def _field(data: Path, n: int, nt: int) -> Path:
    from geodl.testing import write_large_field

    path = data / f"field_{n}x{n}x{nt}.zarr"
    done = path.with_name(path.name + ".complete")  # beside the store: zarr warns of strays in it
    if (path / ".complete").exists():  # where earlier versions of this script put it
        (path / ".complete").rename(done)
    if not done.exists():
        t0 = time.perf_counter()
        write_large_field(path, nt, n, n)
        done.write_text("")
        print(f"generated {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _run_stage(name: str, config: Path, out: Path, log: Path, timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DASK_SCHEDULER": "synchronous"}
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "geodl.cli"]
    cmd += ["stage", name, str(config), "--out", str(out)]
    t0 = time.perf_counter()
    # its own session, so that a timeout stops the stage too, not only /usr/bin/time (the
    # stage used to run on, unmeasured, beside the next one)
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            log.write_text(stdout + stderr + f"\nstopped after {timeout:g} s\n")
            wall = time.perf_counter() - t0
            return {"stage": name, "rc": None, "wall_s": wall, "cpu_s": None, "peak_mb": None}
    wall = time.perf_counter() - t0
    log.write_text(stdout + stderr)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    peak = int(m.group(1)) / 1024 if m else None
    cpu = [re.search(rf"{k} time \(seconds\): ([\d.]+)", stderr) for k in ("User", "System")]
    cpu_s = sum(float(c.group(1)) for c in cpu) if all(cpu) else None
    return {"stage": name, "rc": proc.returncode, "wall_s": wall, "cpu_s": cpu_s, "peak_mb": peak}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000])
    ap.add_argument("--nt", type=int, default=365)
    ap.add_argument("--data", type=Path, default=Path("data/large_grid"))
    ap.add_argument("--runs", type=Path, default=None, help="run dirs (default: DATA/runs)")
    ap.add_argument("--methods", nargs="+", default=["oi", "unet"], choices=["oi", "unet"])
    ap.add_argument("--stages", nargs="+", default=None, help="default: every stage of the run")
    ap.add_argument("--oi-untuned", action="store_true", help="OI with prepare's scales, no search")
    ap.add_argument(
        "--oi-scales",
        type=float,
        nargs=2,
        metavar=("LX_KM", "LT_DAYS"),
        default=None,
        help="OI with these scales at every size, no search",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per stage")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    runs = args.runs or args.data / "runs"
    results = []
    for n in args.sizes:
        path = _field(args.data, n, args.nt)
        out = runs / f"n{n}"  # the run directory: geodl writes only there
        runs.mkdir(parents=True, exist_ok=True)
        config = runs / f"large_grid_{n}.yaml"
        methods = ", ".join(args.methods)
        tune = "{noise_factors: [1, 3, 10, 30]}"
        if args.oi_untuned or args.oi_scales:
            tune = "{enabled: false}"
        if args.oi_scales:
            tune += ", lx_km: {}, lt_days: {}".format(*args.oi_scales)
        text = CONFIG.format(
            n=n, path=path.resolve(), methods=methods, oi_tune=tune, **_splits(args.nt)
        )
        config.write_text(text)
        stages = args.stages or [  # train_<m>, predict_<m> of the listed methods only
            st for st in STAGES if st.partition("_")[2] in ("", *args.methods)
        ]
        field_mb = n * n * args.nt * 4 / 2**20
        print(f"\n## {n} x {n} x {args.nt} (field {field_mb:.0f} MB float32)", flush=True)
        print(
            "| stage | peak RSS (MB) | wall (s) | CPU (s) | rc |\n|---|---|---|---|---|", flush=True
        )
        for name in stages:
            log = runs / f"n{n}_{name}.log"
            r = _run_stage(name, config, out, log, args.timeout)
            r.update(n=n, nt=args.nt, field_mb=field_mb)
            results.append(r)
            peak = "—" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
            rc = "timeout" if r["rc"] is None else r["rc"]
            cpu = "—" if r["cpu_s"] is None else f"{r['cpu_s']:.1f}"
            print(f"| {name} | {peak} | {r['wall_s']:.1f} | {cpu} | {rc} |", flush=True)
            if r["rc"] != 0:
                print(f"stage {name} failed: see {log}", flush=True)
                break
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
