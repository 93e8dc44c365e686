"""Benchmark: build geocells on a seeded seed-like point set (90,515 points with the seed's province mix).

The points come from ``tests/data_gen.py`` (loaded by path): towns of Pakistan from GeoNames weighted by
population, landmark spots photographed many times, and a wide rural spread. The target is a build in
under 15 s on 2 cores. Prints the wall and CPU time, the cells per province and the constraint check, and
ends with one JSON line.

    python benchmarks/bench_cells.py [--seed 0] [--repeat 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np

TARGET_S = 15.0


def _load_data_gen():
    path = Path(__file__).resolve().parents[1] / "tests" / "data_gen.py"
    spec = importlib.util.spec_from_file_location("geopak_bench_data_gen", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the point generator {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="seed of the point set and of the build")
    ap.add_argument("--repeat", type=int, default=1, help="builds to time (the best and all are reported)")
    args = ap.parse_args()

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    import hdbscan  # noqa: F401  (timed apart: importing scikit-learn takes seconds on a cold start)

    from geopak.geocells import CellConfig, build_cells, check_cells
    from geopak.provinces import PROVINCES

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    points = _load_data_gen().seed_like_points(seed=args.seed)
    gen_s = time.perf_counter() - t0
    mix = points["province"].value_counts()
    print(f"points: {len(points):,} ({', '.join(f'{p.short} {mix.get(p.name, 0):,}' for p in PROVINCES)}), "
          f"generated in {gen_s:.2f} s; imports {import_s:.2f} s")
    print(f"cores: {os.cpu_count()}, load average before: {', '.join(f'{x:.2f}' for x in load_before)} "
          "(the CPU may be shared with other jobs)")

    config = CellConfig(seed=args.seed)
    walls, cpus = [], []
    table = assignments = None
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        table, assignments = build_cells(points, config)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    assert table is not None and assignments is not None
    check = check_cells(table, assignments, points, config)
    stats = table.cells.attrs["build"]
    print(f"build: {min(walls):.2f} s wall (runs: {', '.join(f'{w:.2f}' for w in walls)}), "
          f"{min(cpus):.2f} s CPU; target < {TARGET_S:.0f} s: {'met' if min(walls) < TARGET_S else 'NOT met'}")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'province':<30} {'points':>7} {'target':>6} {'cells':>5} {'urban':>5} {'median n':>8} "
          f"{'p50 km':>7} {'p90 km':>7} {'seconds':>7}")
    per_province = {}
    for p in PROVINCES:
        blk = table.cells[table.cells["province"] == p.name]
        st = stats.get(p.name, {})
        r = blk["radius_km"].to_numpy()
        print(f"{p.name:<30} {st.get('points', 0):>7,} {st.get('target', 0):>6} {len(blk):>5} "
              f"{int(blk['urban'].sum()):>5} {np.median(blk['count']) if len(blk) else 0:>8.0f} "
              f"{np.median(r) if len(r) else 0:>7.1f} {np.quantile(r, 0.9) if len(r) else 0:>7.1f} "
              f"{st.get('seconds', 0):>7.2f}")
        per_province[p.short] = len(blk)
    print(f"total: {table.n_cells} cells")
    print(check.summary())
    print(json.dumps({
        "n_points": len(points),
        "seed": args.seed,
        "build_s": round(min(walls), 3),
        "build_runs_s": [round(w, 3) for w in walls],
        "build_cpu_s": round(min(cpus), 3),
        "import_s": round(import_s, 3),
        "target_s": TARGET_S,
        "met": bool(min(walls) < TARGET_S),
        "n_cells": table.n_cells,
        "cells_per_province": per_province,
        "constraints_ok": check.ok,
        "radius_over_unsplittable": len(check.radius_over_unsplittable),
        "load_avg_before": [round(x, 2) for x in load_before],
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
