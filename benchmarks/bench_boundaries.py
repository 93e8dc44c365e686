"""Province lookup speed: polygons (if a boundaries file is given) and the offline GeoNames fallback.

    python benchmarks/bench_boundaries.py [--boundaries FILE] [--n 100000] [--seed 0]

Points are uniform in Pakistan's bounding box (so about half lie outside). With polygons, the fallback's
agreement with them is also reported, over all points and over the points inside Pakistan.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from geopak import boundaries as B

BBOX = (23.6, 37.1, 60.8, 77.9)  # lat_min, lat_max, lon_min, lon_max of Pakistan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boundaries", type=Path, default=None, help="GeoJSON/shapefile of the provinces")
    ap.add_argument("--n", type=int, default=100_000, help="number of points")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    lat = rng.uniform(BBOX[0], BBOX[1], args.n)
    lon = rng.uniform(BBOX[2], BBOX[3], args.n)
    result: dict[str, object] = {"n": args.n}

    t0 = time.perf_counter()
    B._settlements()
    load_fb = time.perf_counter() - t0
    t0 = time.perf_counter()
    fb = B.lookup_provinces(lat, lon, method="geonames")
    t_fb = time.perf_counter() - t0
    print(f"fallback: table load {load_fb:.2f} s, {args.n:,} points in {t_fb:.3f} s "
          f"({args.n / t_fb:,.0f} points/s); {fb.source}")
    result.update(fallback_load_s=round(load_fb, 3), fallback_s=round(t_fb, 3),
                  fallback_points_per_s=round(args.n / t_fb))

    if args.boundaries is not None:
        t0 = time.perf_counter()
        polys = B.read_boundaries_file(args.boundaries)
        load_p = time.perf_counter() - t0
        t0 = time.perf_counter()
        poly = B.lookup_provinces(lat, lon, polys)
        t_p = time.perf_counter() - t0
        inside = poly.inside
        agree_all = float(np.mean(fb.province == poly.province))
        agree_in = float(np.mean(fb.province[inside] == poly.province[inside]))
        none_out = float(np.mean(~fb.inside[~inside])) if (~inside).any() else float("nan")
        print(f"polygons: file load {load_p:.3f} s, {args.n:,} points in {t_p:.3f} s ({args.n / t_p:,.0f} points/s)")
        print(f"fallback vs polygons: agreement {agree_all:.4f} over all points, {agree_in:.4f} over the "
              f"{int(inside.sum()):,} inside Pakistan; {none_out:.4f} of the points outside resolve to None")
        result.update(polygons_load_s=round(load_p, 4), polygons_s=round(t_p, 4),
                      polygons_points_per_s=round(args.n / t_p), n_inside=int(inside.sum()),
                      agreement_all=round(agree_all, 4), agreement_inside=round(agree_in, 4),
                      fallback_none_outside=round(none_out, 4))
    else:
        print("polygons: skipped (no --boundaries FILE)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
