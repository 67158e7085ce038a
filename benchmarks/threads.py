"""CPU threads that do not fight: one training alone against two sharing the cores.

Usage (from the repository root, on a quiet machine):

    python benchmarks/threads.py --steps 40 --json /tmp/threads.json

Each case starts worker processes that train the quick mapping config's UNet (depth 2, width 16,
29-day windows as channels, 64 x 64 patches, batch 8, Adam) on random data for ``--steps`` steps,
after ``--warmup`` untimed steps, and report their steps/s:

- ``alone``: one worker with geodl's default thread count (the cores this process may use,
  :func:`geodl.training.threads.available_cpus`);
- ``two, default threads``: two workers at once, each with that default;
- ``two, 1 thread each``: two workers at once, ``experiment.threads: 1`` each.

It prints each case's steps/s per worker and in total, and the ratios to ``alone``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(threads: int | None, steps: int, warmup: int) -> dict[str, float]:
    import torch

    from geodl.models import build_model
    from geodl.training.threads import set_threads

    record = set_threads(threads)
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, n_times=29, depth=2, width=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    obs = torch.randn(8, 29, 1, 64, 64)
    mask = torch.rand(8, 29, 1, 64, 64) < 0.06
    target = torch.randn(8, 29, 1, 64, 64)
    obs = obs * mask
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        out = model(obs, mask)
        pred = out.mean
        loss = ((pred - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    wall = time.perf_counter() - start
    return {"steps_per_s": steps / wall, "wall_s": wall, "threads": record["torch_threads"]}


def run_case(n: int, threads: int | None, steps: int, warmup: int) -> list[dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--worker", "--steps", str(steps), "--warmup", str(warmup)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed with exit code {p.returncode}")
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.threads, args.steps, args.warmup)))
        return 0
    from geodl.training.threads import available_cpus

    cases = {
        "alone": (1, None),
        "two, default threads": (2, None),
        "two, 1 thread each": (2, 1),
    }
    results = {}
    for name, (n, threads) in cases.items():
        results[name] = run_case(n, threads, args.steps, args.warmup)
    base = results["alone"][0]["steps_per_s"]
    print(f"cores available: {available_cpus()}; {args.steps} timed steps per worker")
    print("| case | threads per worker | steps/s per worker | total steps/s | total / alone |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        per = [r["steps_per_s"] for r in rows]
        total = sum(per)
        print(
            f"| {name} | {rows[0]['threads']} | {' / '.join(f'{p:.2f}' for p in per)} | "
            f"{total:.2f} | {total / base:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
