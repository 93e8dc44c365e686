"""GeoPak-Synth throughput: images/s rendered and saved as JPEG, and the end-to-end ``generate`` time.

Reports, for ``--n`` images at ``--size`` px:

- the one-off setup (world rasters from the cache, province lookup, placement and scene table);
- the render+JPEG stage with ``--workers`` processes: wall-clock images/s, and CPU-seconds per image summed
  over the workers (``cpu_ms_per_image``), from which ``cpu_bound_images_per_s = workers x 1000 /
  cpu_ms_per_image`` is what the stage would reach on that many idle cores;
- the load average before and after, because a shared machine skews the wall-clock figure.

Ends with one JSON line.

    python benchmarks/bench_synth.py --n 2000 --size 224 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from geopak.data.synth.generate import render_images
    from geopak.data.synth.placement import MODES, province_lookup, sample_locations
    from geopak.data.synth.scene import scene_table
    from geopak.data.synth.world import load_world

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    world = load_world()
    t_world = time.perf_counter() - t0
    t0 = time.perf_counter()
    lookup, desc = province_lookup()
    t_lookup = time.perf_counter() - t0
    t0 = time.perf_counter()
    locs = sample_locations(args.n, args.seed, None, world, lookup)
    mode_id = locs["mode"].map({m: i for i, m in enumerate(MODES)}).to_numpy(np.int64)
    scenes = scene_table(world, locs["lat"].to_numpy(), locs["lon"].to_numpy(), locs["province_id"].to_numpy(), mode_id)
    t_place = time.perf_counter() - t0
    print(f"setup: world {t_world:.2f} s, lookup ({desc}) {t_lookup:.2f} s, placement+scenes for {args.n} {t_place:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = time.process_time() + _children_cpu()
        t0 = time.perf_counter()
        render_images(scenes, Path(tmp), args.seed, args.size, workers=args.workers)
        wall = time.perf_counter() - t0
        cpu = time.process_time() + _children_cpu() - cpu0
        jpeg_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*.jpg"))
    load_after = os.getloadavg()
    ips = args.n / wall
    cpu_ms = 1000.0 * cpu / args.n
    bound = args.workers * 1000.0 / cpu_ms
    print(f"render+JPEG: {args.n} images at {args.size} px with {args.workers} workers in {wall:.2f} s "
          f"= {ips:.0f} images/s (wall); {cpu_ms:.2f} CPU-ms/image -> {bound:.0f} images/s on {args.workers} idle cores")
    print(f"mean JPEG size {jpeg_bytes / args.n / 1024:.1f} KiB; load average before {load_before[0]:.1f}, "
          f"after {load_after[0]:.1f} on {os.cpu_count()} CPUs")
    print(json.dumps({
        "n": args.n, "size": args.size, "workers": args.workers, "cpus": os.cpu_count(),
        "setup_world_s": round(t_world, 3), "setup_lookup_s": round(t_lookup, 3), "placement_s": round(t_place, 3),
        "render_wall_s": round(wall, 3), "images_per_s": round(ips, 1), "cpu_ms_per_image": round(cpu_ms, 3),
        "cpu_bound_images_per_s": round(bound, 1), "mean_jpeg_kib": round(jpeg_bytes / args.n / 1024, 2),
        "loadavg_before": round(load_before[0], 2), "loadavg_after": round(load_after[0], 2),
        "lookup": desc,
    }))


if __name__ == "__main__":
    main()
