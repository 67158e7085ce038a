"""Benchmark of the geodl patch loader against xbatcher 0.4 and plain NumPy slicing.

Every measurement runs on the same data and the same patches, in one invocation. Each loader runs
in its own subprocess so that its peak memory is its own (reported as the peak RSS above the RSS
after imports, and as total peak RSS).

    python benchmarks/loader.py --generate                      # data/loader_field.{nc,zarr}
    python benchmarks/loader.py --path data/loader_field.zarr --variable ssh \\
        --patch time=15,y=120,x=120 --stride time=1,y=60,x=60 --json loader.json

Needs the ``bench`` extra (``pip install -e .[bench]``) for xbatcher.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Samples the RSS of this process and its children every 5 ms while active.

    ``peak_mb`` is the largest total seen; ``above_base_mb`` subtracts the RSS at the start, so a
    loader is charged for what it allocates, not for the interpreter and its imports.
    """

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.base_mb = self._total()
        self.peak_mb = self.base_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _total(self) -> float:
        import psutil

        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._total())
            time.sleep(0.005)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._total())
        return {"peak_above_base_mb": self.peak_mb - self.base_mb, "peak_rss_mb": self.peak_mb}


def _parse(text: str) -> dict[str, int]:
    from geodl.data.convert import parse_chunks

    return parse_chunks(text)


def generate(out_dir: Path) -> None:
    """The 365 x 240 x 240 float32 field, as NetCDF (contiguous) and Zarr (30 x 120 x 120 chunks)."""
    from geodl.testing import make_field, write_netcdf, write_zarr

    out_dir.mkdir(parents=True, exist_ok=True)
    ds = make_field(nt=365, ny=240, nx=240, grid="projected", seed=1)
    write_netcdf(ds, out_dir / "loader_field.nc")
    write_zarr(ds, out_dir / "loader_field.zarr", chunks={"time": 30, "y": 120, "x": 120})
    print(f"wrote {out_dir / 'loader_field.nc'} and {out_dir / 'loader_field.zarr'}")


# --- phases (each in its own process) --------------------------------------------------------
def _source_and_index(args):
    from geodl.data import GriddedSource, PatchIndex

    src = GriddedSource(args.path, args.variable, land_mask=args.land_mask or None)
    idx = PatchIndex(src.shape, _roles(src, args.patch), _roles(src, args.stride))
    return src, idx


def _roles(src, mapping: dict[str, int]) -> dict[str, int]:
    by_dim = dict(zip(src.dims, ("time", "y", "x"), strict=True))
    return {by_dim.get(k, k): v for k, v in mapping.items()}


def _order(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def phase_numpy(args) -> dict:
    """Ceiling: slicing patches out of the in-memory array, batches stacked, wrapped as tensors."""
    import torch

    src, idx = _source_and_index(args)
    mem = PeakMemory()
    arr = np.ascontiguousarray(src.dataset()[args.variable].values, dtype=np.float32)
    T, H, W = idx.size["time"], idx.size["y"], idx.size["x"]
    starts = idx.starts(_order(len(idx)))
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n < len(starts) and time.perf_counter() - t0 < args.seconds:
        part = starts[n : n + args.batch_size]
        batch = np.stack([arr[t : t + T, y : y + H, x : x + W] for t, y, x in part.tolist()])
        torch.from_numpy(batch)
        n += len(part)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    # The array itself is counted: it is what an in-memory loader holds.
    return {"patches": n, "seconds": dt, "patches_per_s": n / dt, "patches_per_cpu_s": n / cpu,
            **mem.stop()}  # fmt: skip


def _run_geodl(args, data, *, workers: int) -> dict:
    from geodl.data import GriddedSource, PatchStream, make_loader

    t_start = time.perf_counter()
    src = GriddedSource(data, args.variable, land_mask=args.land_mask or None)
    stream = PatchStream(
        src,
        _roles(src, args.patch),
        _roles(src, args.stride),
        batch_size=args.batch_size,
        normalizer=args.stats,
        shuffle=True,
        shuffle_buffer=4 * args.batch_size,
        cache_bytes=args.cache_mb * 2**20,
        block_bytes=args.block_mb * 2**20,
    )
    loader = make_loader(stream, num_workers=workers)
    it = iter(loader)
    first = next(it)
    first_latency = time.perf_counter() - t_start
    n, t0, c0 = first.batch_size, time.perf_counter(), time.process_time()
    for b in it:
        n += b.batch_size
        if time.perf_counter() - t0 > args.seconds:
            break
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    cache = stream.reader.cache
    out = {
        "patches": n,
        "seconds": dt,
        "patches_per_s": (n - first.batch_size) / dt,
        "patches_per_cpu_s": (n - first.batch_size) / cpu if workers == 0 else None,
        "first_batch_s": first_latency,
        "block_shape": list(stream.reader.block[args.variable]),
        "group_tile": stream.reader.tile,
        "workers": workers,
    }
    if workers == 0:
        out["blocks_decoded"] = cache.misses
        out["cache_hits"] = cache.hits
    return out


def phase_geodl_memory(args) -> dict:
    """geodl on the field loaded in memory (normalised on the fly, masks built)."""
    from geodl.data import compute_stats, open_dataset

    keep = [args.variable, *([args.land_mask] if args.land_mask else [])]
    ds = open_dataset(args.path)[keep].load()
    args.stats = compute_stats(ds, [args.variable])
    mem = PeakMemory()  # the loaded array is not counted here: see the numpy phase
    out = _run_geodl(args, ds, workers=0)
    out.update(mem.stop())
    return out


def phase_geodl_store(args) -> dict:
    """geodl streaming from the file or store, with ``--workers`` DataLoader workers."""
    from geodl.data import compute_stats, open_dataset

    args.stats = compute_stats(open_dataset(args.path), [args.variable])
    mem = PeakMemory()
    out = _run_geodl(args, args.path, workers=args.workers)
    out.update(mem.stop())
    return out


def phase_xbatcher(args) -> dict:
    """xbatcher 0.4: BatchGenerator + its torch MapDataset + DataLoader (shuffled)."""
    import torch
    import xbatcher
    from xbatcher.loaders.torch import MapDataset

    from geodl.data import open_dataset

    mem = PeakMemory()
    t_start = time.perf_counter()
    da = open_dataset(args.path)[args.variable]
    overlap = {k: args.patch[k] - args.stride[k] for k in args.patch}
    gen = xbatcher.BatchGenerator(da, input_dims=dict(args.patch), input_overlap=overlap)
    index_s = time.perf_counter() - t_start
    loader = torch.utils.data.DataLoader(
        MapDataset(gen), batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    it = iter(loader)
    first = next(it)
    first_latency = time.perf_counter() - t_start
    n, t0, c0 = first.shape[0], time.perf_counter(), time.process_time()
    for b in it:
        n += b.shape[0]
        if time.perf_counter() - t0 > args.seconds:
            break
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "patches": n,
        "seconds": dt,
        "patches_per_s": (n - first.shape[0]) / dt,
        "patches_per_cpu_s": (n - first.shape[0]) / cpu if args.workers == 0 else None,
        "first_batch_s": first_latency,
        "n_patches": len(gen),
        "generator_build_s": index_s,
        **mem.stop(),
    }


def phase_index(args) -> dict:
    """Build time and memory of a 50-million-patch index (geodl) and xbatcher's per-patch cost."""
    import tracemalloc

    from geodl.data import PatchIndex

    shape = {"time": 5000, "y": 2000, "x": 2000}
    size = {"time": 15, "y": 120, "x": 120}
    stride = {"time": 1, "y": 18, "x": 18}
    tracemalloc.start()
    t0 = time.perf_counter()
    idx = PatchIndex(shape, size, stride)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = {"geodl_patches": len(idx), "geodl_build_s": dt, "geodl_peak_mb": peak / 2**20,
           "geodl_nbytes": idx.nbytes}  # fmt: skip
    # xbatcher on the benchmark field: its index memory per patch, projected to 50M patches.
    import xbatcher

    from geodl.data import open_dataset

    da = open_dataset(args.path)[args.variable]
    overlap = {k: args.patch[k] - args.stride[k] for k in args.patch}
    tracemalloc.start()
    t0 = time.perf_counter()
    gen = xbatcher.BatchGenerator(da, input_dims=dict(args.patch), input_overlap=overlap)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per = peak / len(gen)
    out.update(xbatcher_patches=len(gen), xbatcher_build_s=dt, xbatcher_peak_mb=peak / 2**20,
               xbatcher_bytes_per_patch=per,
               xbatcher_projected_50M_gb=per * len(idx) / 2**30,
               xbatcher_projected_50M_s=dt / len(gen) * len(idx))  # fmt: skip
    return out


def phase_stitch(args) -> dict:
    """geodl overlap-add vs a coordinate-label accumulation loop, same patches and taper."""
    import xarray as xr

    from geodl.data import PatchDataset, stitch, taper

    src, _ = _source_and_index(args)
    ds = PatchDataset(src, _roles(src, args.patch), _roles(src, args.stride),
                      split=(0, args.stitch_steps))  # fmt: skip
    batch = ds.__getitems__(range(len(ds)))
    patches, starts = batch.target.numpy(), batch.starts.numpy()
    timings = {}
    for dtype in ("float64", "float32"):
        best = None
        for _ in range(3):  # best of 3: the machine is shared
            c0, w0 = time.process_time(), time.perf_counter()
            out = stitch(patches, starts, src, mask_land=False, dtype=dtype)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            best = (cpu, wall) if best is None or cpu < best[0] else best
        timings[dtype] = best
        if dtype == "float64":
            exact = out
    # The label loop (as in 4DVarNet-style code): one DataArray per patch, placed by .loc labels.
    coords = src.coords
    tdim, ydim, xdim = src.dims
    T, H, W = patches.shape[1], patches.shape[3], patches.shape[4]
    w = taper((T, H, W))
    tt = coords[tdim].values
    yy, xx = coords[ydim].values, coords[xdim].values
    t1 = int(starts[:, 0].max()) + T
    rec = xr.DataArray(np.zeros((t1, len(yy), len(xx))), dims=src.dims,
                       coords={tdim: tt[:t1], ydim: yy, xdim: xx})  # fmt: skip
    cnt = xr.zeros_like(rec)
    n_loop = min(len(patches), args.label_patches)
    c0, w0 = time.process_time(), time.perf_counter()
    for p, (t, y, x) in zip(patches[:n_loop], starts[:n_loop].tolist(), strict=True):
        da = xr.DataArray(p[:, 0] * w, dims=src.dims,
                          coords={tdim: tt[t : t + T], ydim: yy[y : y + H], xdim: xx[x : x + W]})  # fmt: skip
        sel = {tdim: da[tdim], ydim: da[ydim], xdim: da[xdim]}
        rec.loc[sel] = rec.loc[sel] + da
        cnt.loc[sel] = cnt.loc[sel] + w
    scale = len(patches) / n_loop
    label_cpu = (time.process_time() - c0) * scale
    label_wall = (time.perf_counter() - w0) * scale
    agree = None
    if n_loop == len(patches):
        ref = (rec / cnt).values
        agree = float(np.nanmax(np.abs(ref - exact[args.variable].values)))
    return {
        "patches": len(patches),
        "patch_shape": list(patches.shape[1:]),
        "geodl_float64_cpu_s": timings["float64"][0],
        "geodl_float64_wall_s": timings["float64"][1],
        "geodl_float32_cpu_s": timings["float32"][0],
        "geodl_float32_wall_s": timings["float32"][1],
        "label_loop_patches": n_loop,
        "label_loop_cpu_s": label_cpu,
        "label_loop_wall_s": label_wall,
        "speedup_cpu_float64": label_cpu / timings["float64"][0],
        "speedup_cpu_float32": label_cpu / timings["float32"][0],
        "max_abs_diff_vs_label_loop": agree,
    }


PHASES = {
    "numpy": phase_numpy,
    "geodl_memory": phase_geodl_memory,
    "geodl_store": phase_geodl_store,
    "xbatcher": phase_xbatcher,
    "index": phase_index,
    "stitch": phase_stitch,
}


def _child(args, phase: str) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, *args.passthrough]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def _machine() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("Model name"))  # fmt: skip
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generate", action="store_true", help="write data/loader_field.{nc,zarr}")
    p.add_argument("--path", default=str(ROOT / "data" / "loader_field.zarr"))
    p.add_argument("--variable", default="ssh")
    p.add_argument("--patch", default="time=15,y=120,x=120")
    p.add_argument("--stride", default="time=1,y=60,x=60")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--land-mask",
        default="land_mask",
        help="static land-mask variable ('' to derive land from the target: one extra pass)",
    )
    p.add_argument("--seconds", type=float, default=8.0, help="cap of each throughput run")
    p.add_argument("--cache-mb", type=int, default=64)
    p.add_argument("--block-mb", type=int, default=16)
    p.add_argument("--stitch-steps", type=int, default=30, help="time steps stitched")
    p.add_argument("--label-patches", type=int, default=150, help="cap of the label loop")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--json", help="write the results here")
    p.add_argument("--phase", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.generate:
        generate(ROOT / "data")
        return 0
    args.patch, args.stride = _parse(args.patch), _parse(args.stride)
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)))
        return 0
    raw = argv if argv is not None else sys.argv[1:]
    skip = {"--json", "--phases"}
    args.passthrough = []
    it = iter(raw)
    for tok in it:
        key = tok.split("=", 1)[0]
        if key in skip:
            if "=" not in tok:
                next(it, None)
            continue
        args.passthrough.append(tok)
    results: dict = {
        "command": " ".join(["python", "benchmarks/loader.py", *raw]),
        "machine": _machine(),
        "patch": args.patch,
        "stride": args.stride,
        "batch_size": args.batch_size,
    }
    for phase in args.phases.split(","):
        print(f"[loader] {phase} ...", file=sys.stderr, flush=True)
        results[phase] = _child(args, phase)
        print(f"[loader] {phase}: {json.dumps(results[phase])}", file=sys.stderr, flush=True)
    r = results
    patch_mb = np.prod([args.patch[k] for k in args.patch]) * 4 / 1e6
    ratios = {}
    try:
        ratios["geodl_memory_vs_numpy"] = (
            r["geodl_memory"]["patches_per_s"] / r["numpy"]["patches_per_s"]
        )
        ratios["geodl_store_vs_xbatcher"] = (
            r["geodl_store"]["patches_per_s"] / r["xbatcher"]["patches_per_s"]
        )
        ratios["geodl_store_vs_xbatcher_peak_mem"] = (
            r["geodl_store"]["peak_above_base_mb"] / r["xbatcher"]["peak_above_base_mb"]
        )
        if r["xbatcher"].get("patches_per_cpu_s") and r["geodl_store"].get("patches_per_cpu_s"):
            ratios["geodl_store_vs_xbatcher_cpu"] = (
                r["geodl_store"]["patches_per_cpu_s"] / r["xbatcher"]["patches_per_cpu_s"]
            )
        ratios["geodl_memory_vs_numpy_cpu"] = (
            r["geodl_memory"]["patches_per_cpu_s"] / r["numpy"]["patches_per_cpu_s"]
        )
        for k in ("numpy", "geodl_memory", "geodl_store", "xbatcher"):
            r[k]["mb_per_s"] = r[k]["patches_per_s"] * patch_mb
    except (KeyError, ZeroDivisionError):
        pass
    results["ratios"] = ratios
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
