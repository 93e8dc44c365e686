"""Plots and the markdown report of an evaluation, and the per-photo prediction map of ``geopak predict --plot``.

matplotlib is imported lazily with the non-interactive Agg backend. Province outlines come from
:func:`geopak.boundaries.load_polygons` when a boundaries file is available (never downloaded here);
without it the maps show a plain lat/lon frame of Pakistan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geopak import geo
from geopak.provinces import NUM_PROVINCES, PROVINCES

logger = logging.getLogger(__name__)

__all__ = [
    "PAKISTAN_EXTENT",
    "markdown_table",
    "plot_calibration",
    "plot_confusion",
    "plot_error_cdf",
    "plot_error_map",
    "plot_oracle",
    "plot_prediction",
    "province_outlines",
    "write_report",
]

PAKISTAN_EXTENT = (60.5, 78.0, 23.5, 37.3)
"""(lon_min, lon_max, lat_min, lat_max) framing Pakistan with Azad Kashmir and Gilgit-Baltistan."""

_UNSET: Any = object()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def province_outlines(path: str | Path | None = None) -> dict[str, Any] | None:
    """Province polygons (canonical name -> shapely geometry) if a boundaries file is at hand, else None."""
    try:
        from geopak.boundaries import load_polygons
    except ImportError:
        return None
    try:
        return load_polygons(path, allow_download=False)
    except Exception as e:  # a broken boundaries file must not break a report  # noqa: BLE001
        logger.warning("province outlines unavailable (%s); maps are drawn without them", e)
        return None


def _draw_outlines(ax: Any, polygons: Mapping[str, Any] | None) -> None:
    if not polygons:
        return
    for geom in polygons.values():
        parts = getattr(geom, "geoms", [geom])
        for poly in parts:
            for ring in [poly.exterior, *poly.interiors]:
                x, y = ring.xy
                ax.plot(x, y, color="0.45", lw=0.6, zorder=1)


def _frame(ax: Any, extent: Sequence[float] = PAKISTAN_EXTENT) -> None:
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect(1.0 / np.cos(np.deg2rad((extent[2] + extent[3]) / 2)))
    ax.set_xlabel("longitude (deg)")
    ax.set_ylabel("latitude (deg)")
    ax.grid(True, lw=0.3, alpha=0.5)


def plot_error_cdf(errors: Mapping[str, np.ndarray], path: Path, title: str = "Error CDF (end-to-end)") -> Path:
    """Cumulative share of images within each distance, one curve per method, log-x."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.get_cmap("tab20").colors
    styles = ("-", "--", "-.", ":")
    for i, (name, d) in enumerate(errors.items()):
        d = np.sort(np.maximum(np.asarray(d, float), 0.01))
        if len(d):
            ax.step(d, np.arange(1, len(d) + 1) / len(d), where="post", label=name, color=colors[(2 * i) % 20 + i // 10],
                    ls=styles[(i // 4) % 4] if name != "geopak" else "-", lw=2.2 if name == "geopak" else 1.1)
    for t in (1, 5, 25, 100, 200):
        ax.axvline(t, color="0.8", lw=0.6, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("error (km, log scale)")
    ax.set_ylabel("share of images within")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_error_map(true_lat: np.ndarray, true_lon: np.ndarray, pred_lat: np.ndarray, pred_lon: np.ndarray,
                   path: Path, polygons: Mapping[str, Any] | None = None, max_lines: int = 400, seed: int = 0) -> Path:
    """True positions coloured by error (log km), with lines to the predictions for a sample of images."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    d = np.maximum(np.asarray(geo.haversine_km(true_lat, true_lon, pred_lat, pred_lon)), 0.1)
    fig, ax = plt.subplots(figsize=(7, 7))
    _draw_outlines(ax, polygons)
    rng = np.random.default_rng(seed)
    sel = rng.choice(len(d), size=min(max_lines, len(d)), replace=False) if len(d) else np.array([], int)
    for i in sel:
        ax.plot([true_lon[i], pred_lon[i]], [true_lat[i], pred_lat[i]], color="tab:red", lw=0.4, alpha=0.35, zorder=2)
    sc = ax.scatter(true_lon, true_lat, c=d, s=8, cmap="viridis_r", norm=LogNorm(vmin=0.1, vmax=max(1000.0, d.max())),
                    zorder=3)
    fig.colorbar(sc, ax=ax, shrink=0.7, label="error (km)")
    _frame(ax)
    ax.set_title(f"Errors by true position (lines: true -> predicted, {len(sel)} of {len(d)})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_confusion(cm: np.ndarray, path: Path) -> Path:
    """Row-normalised province confusion matrix with counts."""
    plt = _plt()
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    labels = [p.short for p in PROVINCES]
    ax.set_xticks(range(NUM_PROVINCES), labels)
    ax.set_yticks(range(NUM_PROVINCES), labels)
    ax.set_xlabel("predicted province")
    ax.set_ylabel("true province")
    for i in range(NUM_PROVINCES):
        for j in range(NUM_PROVINCES):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true province's images")
    ax.set_title("Province confusion (end-to-end)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_calibration(rows: Sequence[Mapping[str, Any]], path: Path, within_km: float = 25.0) -> Path:
    """Mean confidence vs the observed share within ``within_km`` (left) and median error (right) per bin."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    c = [r["mean_confidence"] for r in rows]
    a.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfect calibration")
    a.plot(c, [r["frac_within"] for r in rows], "o-", label="observed")
    a.set_xlabel("mean confidence in bin")
    a.set_ylabel(f"share with error <= {within_km:g} km")
    a.set_xlim(0, 1)
    a.set_ylim(0, 1)
    a.legend(fontsize=8)
    b.plot(c, [r["median_km"] for r in rows], "o-")
    b.set_xlabel("mean confidence in bin")
    b.set_ylabel("median error (km)")
    b.set_yscale("log")
    fig.suptitle("Calibration (equal-count confidence bins)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_oracle(real_km: np.ndarray, oracle_km: np.ndarray, path: Path) -> Path:
    """Two panels side by side: the real end-to-end errors and, clearly labelled, the oracle-cell errors."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True, sharex=True)
    for ax, d, title, color in (
        (axes[0], real_km, "REAL: end-to-end prediction", "tab:blue"),
        (axes[1], oracle_km, "ORACLE CELL: true cell given\n(NOT a geolocation result)", "tab:gray"),
    ):
        d = np.sort(np.maximum(np.asarray(d, float), 0.01))
        ax.step(d, np.arange(1, len(d) + 1) / max(len(d), 1), where="post", color=color)
        ax.set_xscale("log")
        ax.set_xlabel("error (km, log scale)")
        ax.set_title(f"{title}\nmedian {np.median(d):.1f} km" if len(d) else title, fontsize=9)
        ax.grid(True, lw=0.3)
    axes[0].set_ylabel("share of images within")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _circle(lat: float, lon: float, radius_km: float, n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    bearings = np.linspace(0, 360, n)
    la, lo = geo.destination_point(np.full(n, lat), np.full(n, lon), bearings, np.full(n, radius_km))
    return np.asarray(la), np.asarray(lo)


def plot_prediction(record: Mapping[str, Any], path: Path, polygons: Mapping[str, Any] | None = _UNSET,
                    title: str | None = None) -> Path:
    """One prediction on a map of Pakistan (left) and zoomed in (right): hypotheses sized by p, the final
    position and the uncertainty circle of ``radius_km``; the true position too when the record has
    ``true_lat``/``true_lon`` (evaluation images)."""
    plt = _plt()
    if polygons is _UNSET:
        polygons = province_outlines()
    hyps = record.get("hypotheses", [])
    hl = np.array([h["lat"] for h in hyps], float)
    ho = np.array([h["lon"] for h in hyps], float)
    hp = np.array([h["p"] for h in hyps], float)
    lat, lon, r = float(record["lat"]), float(record["lon"]), float(record.get("radius_km") or 0.0)
    cl, co = _circle(lat, lon, max(r, 0.5))
    truth = record.get("true_lat"), record.get("true_lon")
    has_truth = truth[0] is not None and truth[1] is not None
    tl, to = (float(truth[0]), float(truth[1])) if has_truth else (lat, lon)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    all_lat, all_lon = np.r_[hl, cl, lat, tl], np.r_[ho, co, lon, to]
    mid_lat, mid_lon = (all_lat.min() + all_lat.max()) / 2, (all_lon.min() + all_lon.max()) / 2
    half_lat = max(np.ptp(all_lat), 0.2) * 0.55
    half_lon = max(np.ptp(all_lon), 0.2) * 0.55
    zoom = (mid_lon - half_lon, mid_lon + half_lon, mid_lat - half_lat, mid_lat + half_lat)
    for ax, extent in ((axes[0], PAKISTAN_EXTENT), (axes[1], zoom)):
        _draw_outlines(ax, polygons)
        if len(hl):
            ax.scatter(ho, hl, s=20 + 400 * hp, c="tab:orange", alpha=0.6, edgecolor="k", lw=0.4, zorder=3,
                       label="hypotheses (size = p)")
        ax.plot(co, cl, color="tab:blue", lw=1, zorder=4, label=f"radius {r:.1f} km")
        ax.scatter([lon], [lat], marker="*", s=180, c="tab:red", edgecolor="k", zorder=5, label="prediction")
        if has_truth:
            ax.scatter([to], [tl], marker="X", s=110, c="tab:green", edgecolor="k", zorder=6, label="true position")
        _frame(ax, extent)
    axes[1].legend(fontsize=8, loc="best")
    axes[0].set_title(title or "prediction", fontsize=9)
    axes[1].set_title(f"{record.get('province', '')}: {lat:.4f}, {lon:.4f}  "
                      f"(confidence {float(record.get('confidence', 0)):.2f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ markdown
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], first: str | None = None) -> str:
    """A GitHub markdown table of ``rows`` (dicts) over ``columns`` (``first`` = the label column key)."""
    cols = ([first] if first else []) + list(columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(out)


_SUMMARY_COLS = ("n", "median_km", "macro_median_km", "mean_km", "p90_km", "acc_1km", "acc_5km", "acc_25km",
                 "acc_100km", "acc_200km", "geoscore", "geoscore_pk", "province_accuracy")


def write_report(out_dir: Path, metrics: Mapping[str, Any], figures: Sequence[tuple[str, str]],
                 compare: Sequence[Mapping[str, Any]] | None = None, notes: Sequence[str] = ()) -> Path:
    """Write ``report.md``: the plots first, then the summary, per-province, breakdown, calibration and
    comparison tables, then notes. ``figures`` are ``(caption, file name)`` pairs relative to ``out_dir``."""
    lines = [f"# GEOPAK evaluation: {metrics.get('checkpoint', '')}", ""]
    lines.append(f"Split `{metrics.get('split', '')}`, {metrics.get('n', 0)} images, manifest "
                 f"`{metrics.get('manifest', '')}`. All figures are end-to-end predictions from the images.")
    lines.append("")
    for caption, name in figures:
        lines += [f"![{caption}]({name})", f"*{caption}*", ""]
    lines += ["## Summary", "", markdown_table([dict(metrics, method="geopak")], _SUMMARY_COLS, "method"), ""]
    lines += [("GeoScore = 5000 exp(-d / 1492.7 km) (the field's convention); geoscore_pk = 5000 exp(-d / 150 km) "
               "(country scale). macro_median_km = mean over provinces of each province's median error."), ""]
    byp = metrics.get("by_province", {})
    if byp:
        lines += ["## By province", "",
                  markdown_table([dict(v, province=k) for k, v in byp.items()], _SUMMARY_COLS, "province"), ""]
    for key, title in (("by_urban", "Urban vs rural"),):
        if metrics.get(key):
            lines += [f"## {title}", "", f"Source: {metrics.get('urban_source', '')}", "",
                      markdown_table([dict(v, group=k) for k, v in metrics[key].items()], _SUMMARY_COLS[:-1], "group"),
                      ""]
    cal = metrics.get("calibration", {})
    if cal.get("bins"):
        lines += ["## Calibration", "", cal.get("definition", ""), "",
                  markdown_table(cal["bins"], ("lo", "hi", "n", "mean_confidence", "frac_within", "median_km")), ""]
    if compare:
        lines += ["## Baselines and ablations (same split; baselines on the checkpoint's encoder features)", "",
                  markdown_table(compare, _SUMMARY_COLS, "method"), ""]
    if metrics.get("oracle_cell"):
        o = metrics["oracle_cell"]
        lines += ["## Oracle cell (NOT a geolocation result)", "",
                  ("The true geocell is handed to the model and only its offset is applied. This bounds what a "
                   "perfect cell classifier would give; it is shown only beside the real end-to-end figures above. "
                   f"Oracle median {_fmt(o.get('median_km'))} km vs real {_fmt(metrics.get('median_km'))} km."), ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines))
    return path
