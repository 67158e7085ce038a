"""GPU readiness and measurement: one short, prepared run for a CUDA machine.

Usage (from the repository root):

    python benchmarks/gpu.py --json gpu.json            # on a CUDA machine, about 4-6 minutes
    python benchmarks/gpu.py --cpu --json /tmp/dry.json # the dry run: tiny sizes, CPU, < 1 min
    python benchmarks/gpu.py --parts mapping --mapping-config configs/ssh_mapping_medium.yaml

Parts (``--parts``, comma-separated; default ``train,loader,qg,oi``):

- ``train``: samples/s of one optimiser step (forward, masked MSE or Gaussian NLL, backward,
  AdamW) of unet, dincae and 4DVarNet with the full mapping config's model settings
  (``configs/ssh_mapping.yaml``), bf16 autocast on the GPU, at 29 x 128 x 128 and 29 x 256 x 256.
- ``loader``: the UNet training step fed by geodl's loader (``PatchDataset`` over a chunked Zarr
  field, ``make_loader`` with pinned memory and workers): samples/s and the fraction of the time
  the GPU waits for data (time in ``next(loader)`` and the host-to-device copy over the total;
  the issue's target is < 10%).
- ``qg``: member-steps/s of the two-layer QG model (128 x 128) for 1 to 256 ensemble members,
  on the GPU and on the CPU (threads = the process's cores), float64.
- ``oi``: one OI analysis (29 x 128 x 128, ~5% observed, the mapping task's tiles) on the GPU
  and the CPU.
- ``mapping``: ``geodl run`` of ``--mapping-config`` with every learned method on the GPU in
  bf16 (``--set <m>.train.accelerator=gpu``), stopped after ``--mapping-timeout`` seconds; the
  stage times and, if it finished, the metrics come back from the run's ``manifest.json`` and
  ``metrics.json``.

Each timed part runs for at most ``--seconds`` per case after warm-up steps. The result is one
JSON document (``--json``) and a Markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geodl import losses  # noqa: E402
from geodl.models import build_model  # noqa: E402

#: model settings of configs/ssh_mapping.yaml (the full literature regime)
FULL_MODELS: dict[str, dict[str, Any]] = {
    "unet": {"depth": 3, "width": 32},
    "dincae": {"depth": 3, "width": 32},
    "fourdvarnet": {
        "n_iter": 15,
        "prior_hidden": 64,
        "lstm_hidden": 64,
        "variance": True,
        "first_guess": "unet",
        "first_guess_depth": 3,
        "first_guess_width": 32,
        "project": False,
    },
}
#: the dry run's small settings (same code paths)
DRY_MODELS: dict[str, dict[str, Any]] = {
    "unet": {"depth": 2, "width": 8},
    "dincae": {"depth": 2, "width": 8},
    "fourdvarnet": {
        **FULL_MODELS["fourdvarnet"],
        "n_iter": 2,
        "prior_hidden": 8,
        "lstm_hidden": 8,
        "first_guess_depth": 2,
        "first_guess_width": 8,
    },
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _step(model, opt, obs: torch.Tensor, mask: torch.Tensor, device: torch.device) -> None:
    opt.zero_grad(set_to_none=True)
    with _autocast(device):
        out = model(obs * mask, mask)
    mean = out.mean.float()
    if out.log_var is not None:
        loss = losses.gaussian_nll(mean, obs, log_var=out.log_var.float())
    else:
        loss = losses.mse(mean, obs)
    loss.backward()
    opt.step()


def _timed(
    fn, warmup: int, seconds: float, max_steps: int, device: torch.device
) -> tuple[int, float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    start, n = time.perf_counter(), 0
    while n < max_steps and (n == 0 or time.perf_counter() - start < seconds):
        fn()
        n += 1
        if device.type == "cuda" and n % 5 == 0:
            _sync(device)
    _sync(device)
    return n, time.perf_counter() - start


def part_train(args, device: torch.device) -> list[dict]:
    models = DRY_MODELS if args.cpu else FULL_MODELS
    sizes = (16, 32) if args.cpu else (128, 256)
    n_times, batch = (5, 2) if args.cpu else (29, args.batch)
    rows = []
    for size in sizes:
        gen = torch.Generator().manual_seed(0)
        obs = torch.randn(batch, n_times, 1, size, size, generator=gen).to(device)
        mask = (torch.rand(obs.shape, generator=gen) < 0.05).float().to(device)
        for name, kw in models.items():
            torch.manual_seed(0)
            model = build_model(name, in_channels=1, n_times=n_times, **kw).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)

            def run(model=model, opt=opt, obs=obs, mask=mask):
                _step(model, opt, obs, mask, device)

            n, dt = _timed(run, 2, args.seconds, 10_000, device)
            row = {
                "model": name,
                "patch": f"{n_times}x{size}x{size}",
                "batch": batch,
                "precision": "bf16-mixed" if device.type == "cuda" else "32",
                "steps": n,
                "samples_per_s": n * batch / dt,
            }
            if device.type == "cuda":
                row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            rows.append(row)
            print(f"train {name} {row['patch']}: {row['samples_per_s']:.1f} samples/s", flush=True)
    return rows


def part_loader(args, device: torch.device) -> list[dict]:
    from geodl.data import GriddedSource, PatchDataset, make_loader
    from geodl.testing import make_field

    nt, n = (12, 32) if args.cpu else (120, 256)
    size = {"time": 5, "y": 16, "x": 16} if args.cpu else {"time": 29, "y": 128, "x": 128}
    stride = {"time": 1, "y": size["y"] // 2, "x": size["x"] // 2}
    workers_list = (0, 2) if args.cpu else (0, 4, 8)
    batch = 2 if args.cpu else args.batch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "field.zarr"
        ds = make_field(nt=nt, ny=n, nx=n, grid="projected", land=False, seed=0)
        ds.chunk({"time": size["time"], "y": size["y"], "x": size["x"]}).to_zarr(path)
        src = GriddedSource(path, "ssh")
        data = PatchDataset(src, size, stride)
        kw = DRY_MODELS["unet"] if args.cpu else FULL_MODELS["unet"]
        torch.manual_seed(0)
        model = build_model("unet", in_channels=1, n_times=size["time"], **kw).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for workers in workers_list:
            loader = make_loader(
                data,
                batch_size=batch,
                shuffle=True,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                drop_last=True,
                **({"persistent_workers": False, "prefetch_factor": 4} if workers else {}),
            )
            wait = total = 0.0
            samples = 0
            start = time.perf_counter()
            it = iter(loader)
            for k in range(10_000):
                t0 = time.perf_counter()
                try:
                    b = next(it)
                except StopIteration:
                    it = iter(loader)
                    b = next(it)
                target = b.target.to(device, non_blocking=True)
                mask = (torch.rand_like(target) < 0.05).float()
                _sync(device)
                t1 = time.perf_counter()
                _step(model, opt, target, mask, device)
                _sync(device)
                if k >= 2:  # the first batches pay the workers' start
                    wait += t1 - t0
                    total += time.perf_counter() - t0
                    samples += batch
                if time.perf_counter() - start > args.seconds and k >= 4:
                    break
            del it
            rows.append(
                {
                    "workers": workers,
                    "batch": batch,
                    "patch": "x".join(str(size[k]) for k in ("time", "y", "x")),
                    "samples_per_s": samples / total,
                    "wait_fraction": wait / total,
                }
            )
            print(
                f"loader workers={workers}: {rows[-1]['samples_per_s']:.1f} samples/s, "
                f"waiting {rows[-1]['wait_fraction']:.1%}",
                flush=True,
            )
    return rows


def part_qg(args, device: torch.device) -> list[dict]:
    from geodl.sim import QGModel

    nx = 16 if args.cpu else 128
    members = (1, 4) if args.cpu else (1, 4, 16, 64, 256)
    cpu_members = (1, 4) if args.cpu else (1, 4, 16)
    rows = []
    devices = [device] if device.type == "cpu" else [device, torch.device("cpu")]
    for dev in devices:
        for m in members if dev.type == "cuda" else cpu_members:
            model = QGModel("eddy", nx=nx, dt=3600.0, device=dev)
            state = model.start(model.initial_pv(batch=m, seed=0, amplitude=1e-6))

            def run(state=state, model=model):
                for _ in model.trajectory(state, 10, 10):
                    pass

            n, dt = _timed(run, 1, args.seconds, 1000, dev)
            rows.append(
                {"device": dev.type, "members": m, "nx": nx, "member_steps_per_s": m * 10 * n / dt}
            )
            print(
                f"qg {dev.type} members={m}: {rows[-1]['member_steps_per_s']:.0f} member-steps/s",
                flush=True,
            )
    return rows


def part_oi(args, device: torch.device) -> list[dict]:
    from geodl.baselines.oi import OIParams, optimal_interpolation

    nt, n = (5, 24) if args.cpu else (29, 128)
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(nt, n, n, generator=gen, dtype=torch.float64)
    obs = torch.where(torch.rand(truth.shape, generator=gen) < 0.05, truth, torch.nan)
    t, y = torch.arange(float(nt)), torch.arange(float(n)) * 7.8
    params = OIParams(lx=45.0, ly=45.0, lt=20.0, signal_std=1.0, noise_std=0.1)
    rows = []
    for dev in [device] if device.type == "cpu" else [device, torch.device("cpu")]:
        o = obs.to(dev)

        def run(o=o, dev=dev):
            optimal_interpolation(o, t.to(dev), y.to(dev), y.to(dev), params, max_obs=1000)

        n_runs, dt = _timed(run, 1, args.seconds, 3, dev)
        rows.append({"device": dev.type, "grid": f"{nt}x{n}x{n}", "seconds": dt / n_runs})
        print(f"oi {dev.type}: {rows[-1]['seconds']:.2f} s per analysis", flush=True)
    return rows


def part_mapping(args, device: torch.device) -> dict:
    out = Path(args.mapping_out or tempfile.mkdtemp(prefix="gpu_mapping_"))
    sets = []
    if device.type == "cuda":
        for m in ("unet", "dincae", "fourdvarnet"):
            sets += [
                "--set",
                f"{m}.train.accelerator=gpu",
                "--set",
                f"{m}.train.devices=1",
                "--set",
                f"{m}.train.precision=bf16-mixed",
                "--set",
                f"{m}.train.num_workers={min(8, os.cpu_count() or 1)}",
            ]
    sets += [x for s in args.mapping_set for x in ("--set", s)]
    cmd = [sys.executable, "-m", "geodl.cli", "run", args.mapping_config, "--out", str(out), *sets]
    print("mapping:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    try:
        rc = subprocess.run(cmd, timeout=args.mapping_timeout, cwd=ROOT).returncode
    except subprocess.TimeoutExpired:
        rc = None
    result: dict[str, Any] = {
        "config": args.mapping_config,
        "returncode": rc,
        "finished": rc == 0,
        "wall_s": time.perf_counter() - start,
    }
    manifest = out / "manifest.json"
    if manifest.exists():
        stages = json.loads(manifest.read_text()).get("stages", [])
        result["stage_s"] = {e["name"]: e.get("duration_s") for e in stages if "name" in e}
    if (out / "metrics.json").exists():
        metrics = json.loads((out / "metrics.json").read_text())["methods"]
        result["mu"] = {m: r.get("mu") for m, r in metrics.items()}
    print(f"mapping: rc={rc}, {result['wall_s']:.0f} s", flush=True)
    return result


PARTS = {
    "train": part_train,
    "loader": part_loader,
    "qg": part_qg,
    "oi": part_oi,
    "mapping": part_mapping,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU at tiny sizes")
    p.add_argument("--parts", default="train,loader,qg,oi")
    p.add_argument("--seconds", type=float, default=None, help="cap per timed case")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--mapping-config", default="configs/ssh_mapping_medium.yaml")
    p.add_argument("--mapping-timeout", type=float, default=480.0)
    p.add_argument("--mapping-out", default=None)
    p.add_argument("--mapping-set", action="append", default=[], help="extra --set for the run")
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 0.5 if args.cpu else 8.0
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"gpu.py: unknown parts {unknown}; choose from {sorted(PARTS)}", file=sys.stderr)
        return 2
    if not args.cpu and not torch.cuda.is_available():
        print("gpu.py: no CUDA device visible; use --cpu for the dry run", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "dry_run": args.cpu,
    }
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    for part in parts:
        start = time.perf_counter()
        result[part] = PARTS[part](args, device)
        print(f"-- {part}: {time.perf_counter() - start:.1f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list | dict)}))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
