"""``geopak evaluate``: end-to-end evaluation of a checkpoint on a manifest split, with baselines and ablations.

Everything reported is a prediction made from the image alone (decoded, preprocessed and encoded exactly as
:class:`~geopak.inference.GeopakPredictor` does). The encoder features of each split are computed once with
the checkpoint's own encoders and stored in a :class:`~geopak.train.cache.FeatureCache` under ``OUT/features``
(reused while the encoders, image size and ids match); GEOPAK's heads, the mixture variants and every
baseline then run on those same features.

Methods of ``--compare`` (one table, same split):

- ``geopak``: the checkpoint, mixture of top-2 provinces x top-5 cells with offsets.
- ``geopak_argmax``: same model, best province -> best cell -> its offset (inference-only ablation).
- ``geopak_no_offset``: same model, mixture of bare cell centres (inference-only ablation).
- ``geopak_retrieval``: mixture whose hypotheses are pulled toward their cell's most similar training images.
- ``prior``: the training set's geometric median for every image.
- ``knn``: k-NN retrieval on the checkpoint's fused embedding, training images as the index.
- ``flat_cells``: a flat classifier over all cells (no province level) on the cached features.
- ``regression``: a direct (lat, lon) MLP on the cached features, haversine loss.
- ``geopak_prior_adjusted``: same model; province logits + log(data prior / the balanced-batch, class-weighted
  prior the head was trained under) (logit adjustment; needs the training config).
- ``geopak_heads_only``: retrained phases 0-1 (frozen encoders) of the checkpoint's own training config.
- ``geopak_no_smoothing``: retrained like ``geopak_heads_only`` with one-hot geocell targets.
- ``geopak_no_gate``: retrained like ``geopak_heads_only`` with ``fusion = "mean"``.

The three retrained rows share the configuration's frozen starting encoders and their feature cache; compare
them with each other (``geopak_heads_only`` is their reference), and with ``geopak`` only as far as the
checkpoint itself is a phase-0/1 model. They need the training configuration recorded in the checkpoint
(``geopak train`` records it) and the manifest's training rows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from geopak.evaluate import baselines as bl
from geopak.evaluate.metrics import (
    breakdown,
    calibration_table,
    compute_metrics,
    confusion_matrix,
    error_km,
    error_metrics,
)
from geopak.geocells import CellTable
from geopak.inference import GeopakPredictor, Prediction, mixture
from geopak.jsonable import to_jsonable
from geopak.provinces import NUM_PROVINCES, PROVINCE_NAMES, normalize_province
from geopak.train.run import province_prior_shift

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "RETRAINED", "EvalOptions", "EvaluationError", "evaluate_checkpoint"]

METHODS: dict[str, str] = {
    "geopak": "GEOPAK checkpoint: mixture of top-2 provinces x top-5 cells with offsets",
    "geopak_argmax": "same model: best province, best cell, its offset (no mixture)",
    "geopak_median": "same model and hypotheses: p-weighted spherical geometric median instead of the mean",
    "geopak_uncalibrated": "same model: raw probabilities (no temperatures fitted on validation)",
    "geopak_no_offset": "same model: mixture of bare cell centres (offset head unused)",
    "geopak_retrieval": "mixture with each hypothesis pulled toward its cell's nearest training images",
    "prior": "training-set geometric median for every image",
    "knn": "k-NN retrieval on the checkpoint's fused embedding (training images as the index)",
    "flat_cells": "flat geocell classifier over all cells, no province hierarchy (MLP on cached features)",
    "regression": "direct lat/lon regression MLP on cached features (haversine loss)",
    "geopak_prior_adjusted": "same model, province logits shifted from the balanced/weighted training prior "
                             "to the data's prior (logit adjustment)",
}
RETRAINED: dict[str, tuple[str, dict[str, Any]]] = {
    "geopak_heads_only": ("retrained phases 0-1 of the checkpoint's config (reference for the two below)", {}),
    "geopak_no_smoothing": ("retrained phases 0-1 without distance-aware label smoothing",
                            {"loss.label_smoothing": False}),
    "geopak_no_gate": ("retrained phases 0-1 with a plain average instead of the gate", {"model.fusion": "mean"}),
}


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated (missing split, mismatched cells, no training rows for --compare)."""


@dataclass
class EvalOptions:
    """Settings of :func:`evaluate_checkpoint`."""

    split: str = "test"
    """Manifest split to evaluate (``all`` = every row)."""
    compare: bool = False
    """Also run the baselines and ablations."""
    cells: str | Path | None = None
    """A cell-table folder; it must be the checkpoint's (same hash). Its ``assignments.parquet`` gives the
    training rows' cells; otherwise rows are assigned to the nearest cell of their province."""
    device: str | None = None
    batch_size: int = 64
    bf16: bool | None = None
    num_workers: int = 0
    retrain: bool = True
    """Retrain the heads-only ablations (needs the checkpoint's training config)."""
    train_config: str | Path | None = None
    """Training config (name or TOML) for the retrained ablations, instead of the checkpoint's."""
    retrain_max_steps: int | None = None
    """Cap every retrained phase at this many steps (quick runs, tests)."""
    knn_k: int = 10
    retrieval_k: int = 5
    retrieval_alpha: float = 0.5
    baseline_epochs: int = 30
    seed: int = 0
    progress: bool = True
    plots: bool = True
    boundaries: str | Path | None = None
    """Province boundaries file for the map (default: a cached one, if any)."""
    extra_notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ inputs
def _select_rows(df: pd.DataFrame, split: str, where: str) -> pd.DataFrame:
    if split == "all":
        rows = df
    else:
        if "split" not in df.columns:
            raise EvaluationError(
                f"{where} has no split column; pass --split all to evaluate every row, or add a split column"
            )
        rows = df[df["split"].astype(str).str.lower() == split]
        if rows.empty:
            have = sorted(df["split"].dropna().astype(str).unique().tolist())
            raise EvaluationError(f"{where} has no {split!r} rows (splits present: {have})")
    no_prov = rows["province"].isna()
    if no_prov.any():
        logger.warning("%d %s rows have no province (outside Pakistan?): left out", int(no_prov.sum()), split)
        rows = rows[~no_prov]
    rows = rows.reset_index(drop=True)
    rows["province_id"] = [normalize_province(str(p)).id for p in rows["province"]]
    return rows


def _cell_ids(rows: pd.DataFrame, table: CellTable, cells_dir: Path | None) -> np.ndarray:
    """Each row's cell: the cells folder's assignments, else the manifest's cell_id, else the nearest cell."""
    if cells_dir is not None and (cells_dir / "assignments.parquet").exists():
        a = pd.read_parquet(cells_dir / "assignments.parquet")
        m = rows[["id"]].astype(str).merge(a.assign(id=a["id"].astype(str))[["id", "cell_id"]], on="id", how="left")
        if m["cell_id"].notna().all():
            return m["cell_id"].to_numpy(np.int64)
    if "cell_id" in rows.columns and rows["cell_id"].notna().all():
        c = rows["cell_id"].to_numpy(np.int64)
        if c.max() < table.n_cells and np.all(table.province_ids[np.clip(c, 0, None)][c >= 0] ==
                                              rows["province_id"].to_numpy()[c >= 0]):
            return c
        logger.warning("the manifest's cell_id column does not fit the checkpoint's cell table: reassigning")
    return table.assign(rows["lat"].to_numpy(), rows["lon"].to_numpy(), rows["province_id"].to_numpy())


def _features(predictor: GeopakPredictor, rows: pd.DataFrame, root: Path, opts: EvalOptions, model: Any = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Encoder features of ``rows`` (cached under ``root``), computed with ``model``'s encoders."""
    from geopak.data.datasets import GeoImageDataset
    from geopak.train.cache import CACHE_FORMAT, FeatureCache, encoder_fingerprint, ids_hash

    model = model if model is not None else predictor.model
    ids = rows["id"].astype(str).tolist()
    fp = {"format": CACHE_FORMAT, "purpose": "evaluate", "encoders": encoder_fingerprint(model),
          "image_size": predictor.image_size, "bf16": predictor.bf16, "ids": ids_hash(ids), "views": 1}
    cache = FeatureCache(root)
    if not cache.matches(fp):
        ds = GeoImageDataset(
            paths=rows["path"].tolist(),
            targets={"province": rows["province_id"].to_numpy(), "lat": rows["lat"].to_numpy(),
                     "lon": rows["lon"].to_numpy()},
            image_size=predictor.image_size,
            ids=ids,
        )
        cache.build(model, ds, ids, views=1, batch_size=predictor.batch_size, num_workers=opts.num_workers,
                    device=predictor.device, precision="bf16-mixed" if predictor.bf16 else "32-true",
                    fingerprint=fp, progress=opts.progress)
    else:
        logger.info("reusing cached features in %s", root)
    return np.array(cache.array("clip", 0), np.float32), np.array(cache.array("scene", 0), np.float32)


@torch.no_grad()
def _heads(model: Any, clip: np.ndarray, scene: np.ndarray, device: torch.device, chunk: int = 1024
           ) -> list[tuple[Any, int, int]]:
    outs = []
    for s in range(0, len(clip), chunk):
        c = torch.from_numpy(clip[s:s + chunk]).to(device)
        sc = torch.from_numpy(scene[s:s + chunk]).to(device)
        outs.append((model.forward_features(c, sc), s, s + len(c)))
    return outs


@torch.no_grad()
def _mixture_all(model: Any, outs: list[tuple[Any, int, int]], **kw: Any) -> Prediction:
    return Prediction.cat([mixture(model, o, **kw).to("cpu") for o, _, _ in outs])


def _fused(outs: list[tuple[Any, int, int]]) -> np.ndarray:
    return torch.cat([o.fused.float().cpu() for o, _, _ in outs]).numpy()


@dataclass
class _Result:
    lat: np.ndarray
    lon: np.ndarray
    province: np.ndarray | None
    description: str
    seconds: float = 0.0


def _metrics_of(res: _Result, rows: pd.DataFrame) -> dict[str, Any]:
    return compute_metrics(res.lat, res.lon, rows["lat"].to_numpy(), rows["lon"].to_numpy(),
                           rows["province_id"].to_numpy(), res.province)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ------------------------------------------------------------------------------------------ main
def evaluate_checkpoint(
    checkpoint: str | Path,
    manifest: str | Path | pd.DataFrame,
    out_dir: str | Path,
    options: EvalOptions | None = None,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint end to end on one split of a manifest; write metrics, plots and the report.

    Writes ``OUT/metrics.json``, ``OUT/predictions.csv``, ``OUT/report.md`` and the plots; with
    ``options.compare`` also ``OUT/compare.json`` and ``OUT/compare.md``.

    Returns:
        The metrics dict (as written to ``metrics.json``), with ``compare`` (the list) when compared.
    """
    from geopak.evaluate import report

    opts = options or EvalOptions()
    say = status or (lambda msg: logger.info("%s", msg))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    if isinstance(manifest, pd.DataFrame):
        df, where = manifest.copy(), "manifest"
    else:
        from geopak.data.manifest import read_manifest

        df, where = read_manifest(manifest), str(manifest)
    rows = _select_rows(df, opts.split, where)
    if opts.compare and ("split" not in df.columns or not (df["split"].astype(str).str.lower() == "train").any()):
        raise EvaluationError(f"--compare needs the training rows: {where} has no split column with 'train' rows")
    predictor = GeopakPredictor(checkpoint_path=checkpoint, device=opts.device, batch_size=opts.batch_size,
                                bf16=opts.bf16)
    model = predictor.model
    table: CellTable = model.cells
    cells_dir = Path(opts.cells) if opts.cells is not None else None
    if cells_dir is not None:
        given = CellTable.load(cells_dir)
        if given.content_hash != table.content_hash:
            raise EvaluationError(
                f"cell table {cells_dir} ({given.n_cells} cells, hash {given.content_hash[:12]}) is not the one "
                f"checkpoint {checkpoint} was trained with ({table.n_cells} cells, hash {table.content_hash[:12]}); "
                "omit --cells to use the checkpoint's own table"
            )
    say(f"evaluating {len(rows)} {opts.split} images with {checkpoint}")

    clip, scene = _features(predictor, rows, out / "features" / opts.split, opts)
    dev = predictor.device
    outs = _heads(model, clip, scene, dev)
    kw = {"top_provinces": predictor.top_provinces, "top_cells": predictor.top_cells,
          "confidence_km": predictor.confidence_km, "province_temperature": predictor.province_temperature,
          "cell_temperature": predictor.cell_temperature}
    t0 = time.perf_counter()
    pred = _mixture_all(model, outs, **kw)
    mix_s = time.perf_counter() - t0
    true_lat, true_lon = rows["lat"].to_numpy(), rows["lon"].to_numpy()
    results: dict[str, _Result] = {
        "geopak": _Result(_np(pred.lat), _np(pred.lon), _np(pred.province), METHODS["geopak"], mix_s)
    }
    d = error_km(results["geopak"].lat, results["geopak"].lon, true_lat, true_lon)

    metrics = _metrics_of(results["geopak"], rows)
    meta = getattr(model, "checkpoint_meta", {}) or {}
    metrics.update(
        {
            "checkpoint": str(checkpoint),
            "phase": meta.get("phase"),
            "manifest": where,
            "split": opts.split,
            "n_cells": table.n_cells,
            "cell_table_hash": table.content_hash,
            "mixture": {**kw, "mode": "mixture", "use_offsets": True},
            "confusion_matrix": confusion_matrix(rows["province_id"].to_numpy(), results["geopak"].province).tolist(),
            "confusion_labels": list(PROVINCE_NAMES),
        }
    )
    # urban vs rural
    true_cell = _cell_ids(rows, table, cells_dir)
    if "urban" in rows.columns and rows["urban"].notna().all():
        urban = rows["urban"].astype(bool).to_numpy()
        metrics["urban_source"] = "the manifest's urban column"
    else:
        has = true_cell >= 0
        urban = np.where(has, table.cells["urban"].to_numpy(bool)[np.clip(true_cell, 0, None)], False)
        metrics["urban_source"] = "the urban flag of the cell nearest each image's true position (its province's)"
    metrics["by_urban"] = breakdown(d, np.where(urban, "urban", "rural"))
    # calibration
    conf = _np(pred.confidence)
    metrics["calibration"] = {
        "definition": f"confidence = the model's probability mass within {predictor.confidence_km:g} km of its "
                      f"prediction; frac_within = observed share of errors <= {predictor.confidence_km:g} km",
        "within_km": predictor.confidence_km,
        "bins": calibration_table(conf, d, bins=5, within_km=predictor.confidence_km),
        "mean_confidence": float(conf.mean()) if len(conf) else None,
        "spearman_confidence_vs_error": _spearman(conf, d),
    }
    # oracle cell (clearly labelled; not a geolocation result)
    has = true_cell >= 0
    if has.any():
        with torch.no_grad():
            fused = torch.from_numpy(_fused(outs)[has]).to(dev)
            olat, olon = model.predict_offset_positions(fused, torch.from_numpy(true_cell[has]).to(dev)[:, None])
        od = error_km(_np(olat[:, 0]), _np(olon[:, 0]), true_lat[has], true_lon[has])
        metrics["oracle_cell"] = {
            "note": "ORACLE: the true cell is given and only its offset applied; NOT a geolocation result",
            **error_metrics(od),
        }
    else:
        od = np.array([])

    # predictions table
    cols = {
        "id": rows["id"].astype(str), "path": rows["path"].astype(str),
        "true_lat": true_lat, "true_lon": true_lon, "true_province": rows["province"].astype(str),
        "pred_lat": results["geopak"].lat, "pred_lon": results["geopak"].lon,
        "pred_province": [PROVINCE_NAMES[p] for p in results["geopak"].province],
        "confidence": conf, "radius_km": _np(pred.radius_km), "error_km": d, "urban": urban,
    }
    pd.DataFrame(cols).to_csv(out / "predictions.csv", index=False)

    compare_rows: list[dict[str, Any]] | None = None
    notes = list(opts.extra_notes)
    if opts.compare:
        results.update(_compare(predictor, model, df, where, rows, clip, scene, outs, pred, true_cell, table, cells_dir, out,
                                opts, kw, say, notes))
        compare_rows = []
        for name, res in results.items():
            m = _metrics_of(res, rows)
            compare_rows.append({"method": name, "description": res.description,
                                 "seconds": round(res.seconds, 3), **m})
        notes.append(_retrieval_verdict(compare_rows))
        (out / "compare.json").write_text(json.dumps(compare_rows, indent=1, allow_nan=False))
        (out / "compare.md").write_text(_compare_md(compare_rows, opts.split, len(rows)))
        metrics["compare"] = [{k: v for k, v in r.items() if k != "by_province"} for r in compare_rows]

    figures: list[tuple[str, str]] = []
    if opts.plots and len(rows):
        say("drawing plots")
        polygons = report.province_outlines(opts.boundaries)
        curves = {name: error_km(r.lat, r.lon, true_lat, true_lon) for name, r in results.items()}
        report.plot_error_cdf(curves, out / "error_cdf.png")
        figures.append(("Error CDF, end-to-end" + (" (all methods)" if opts.compare else ""), "error_cdf.png"))
        report.plot_error_map(true_lat, true_lon, results["geopak"].lat, results["geopak"].lon, out / "error_map.png",
                              polygons)
        figures.append(("Map of errors (GEOPAK)", "error_map.png"))
        report.plot_confusion(np.asarray(metrics["confusion_matrix"]), out / "confusion.png")
        figures.append(("Province confusion matrix (GEOPAK)", "confusion.png"))
        report.plot_calibration(metrics["calibration"]["bins"], out / "calibration.png", predictor.confidence_km)
        figures.append(("Calibration: confidence vs error", "calibration.png"))
        if len(od):
            report.plot_oracle(d, od, out / "oracle_cell.png")
            caption = ("Real end-to-end errors (left) beside the ORACLE-cell errors (right, true cell given: "
                       "not a geolocation result)")
            figures.append((caption, "oracle_cell.png"))
    metrics["seconds"] = round(time.perf_counter() - t_start, 2)
    (out / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=1, allow_nan=False))
    report.write_report(out, metrics, figures, compare_rows, notes)
    say(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return metrics


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3:
        return None
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _retrieval_verdict(rows: list[dict[str, Any]]) -> str:
    """Whether retrieval refinement helped on this split (macro median, then median)."""
    by = {r["method"]: r for r in rows}
    g, r = by.get("geopak"), by.get("geopak_retrieval")
    if not g or not r or g.get("macro_median_km") is None:
        return "Retrieval refinement was not evaluated."
    helps = (r["macro_median_km"], r["median_km"]) < (g["macro_median_km"], g["median_km"])
    return (
        f"Retrieval refinement {'helps' if helps else 'does not help'} on this split: macro median "
        f"{r['macro_median_km']:.2f} vs {g['macro_median_km']:.2f} km, median {r['median_km']:.2f} vs "
        f"{g['median_km']:.2f} km (geopak_retrieval vs geopak). "
        + ("Consider enabling it." if helps else "The predictor keeps the plain mixture.")
    )


def _compare_md(rows: list[dict[str, Any]], split: str, n: int) -> str:
    from geopak.evaluate.report import markdown_table

    cols = ("median_km", "macro_median_km", "mean_km", "p90_km", "acc_1km", "acc_5km", "acc_25km", "acc_100km",
            "acc_200km", "geoscore", "geoscore_pk", "province_accuracy")
    lines = [f"# Baselines and ablations: split `{split}`, {n} images, same encoder features", "",
             markdown_table(rows, cols, "method"), ""]
    lines += [f"- `{r['method']}`: {r['description']}" for r in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ compare
def _compare(
    predictor: GeopakPredictor, model: Any, df: pd.DataFrame, where: str, rows: pd.DataFrame,
    clip: np.ndarray, scene: np.ndarray, outs: list[tuple[Any, int, int]], pred: Prediction, true_cell: np.ndarray, table: CellTable,
    cells_dir: Path | None, out: Path, opts: EvalOptions, kw: dict[str, Any], say: Callable[[str], None],
    notes: list[str],
) -> dict[str, _Result]:
    res: dict[str, _Result] = {}
    centers, cell_prov = table.centers, table.province_ids

    def timed(name: str, fn: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> None:
        say(f"compare: {name}")
        t0 = time.perf_counter()
        la, lo, pv = fn()
        if pv is None:
            pv = bl.nearest_cell_province(la, lo, centers, cell_prov)
        res[name] = _Result(np.asarray(la, float), np.asarray(lo, float), np.asarray(pv), _description(name),
                            time.perf_counter() - t0)

    def from_pred(p: Prediction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _np(p.lat), _np(p.lon), _np(p.province)

    timed("geopak_argmax", lambda: from_pred(_mixture_all(model, outs, mode="argmax", **kw)))
    timed("geopak_median", lambda: from_pred(_mixture_all(model, outs, mode="median", **kw)))
    raw = {**kw, "province_temperature": 1.0, "cell_temperature": 1.0}
    timed("geopak_uncalibrated", lambda: from_pred(_mixture_all(model, outs, **raw)))
    timed("geopak_no_offset", lambda: from_pred(_mixture_all(model, outs, use_offsets=False, **kw)))

    train_rows = _select_rows(df, "train", where)
    tclip, tscene = _features(predictor, train_rows, out / "features" / "train", opts)
    tcell = _cell_ids(train_rows, table, cells_dir)
    train = bl.FeatureSet(tclip, tscene, train_rows["lat"].to_numpy(), train_rows["lon"].to_numpy(),
                          train_rows["province_id"].to_numpy(), tcell)
    test = bl.FeatureSet(clip, scene, rows["lat"].to_numpy(), rows["lon"].to_numpy(), rows["province_id"].to_numpy())
    tr_outs = _heads(model, tclip, tscene, predictor.device)
    train_fused, test_fused = _fused(tr_outs), _fused(outs)

    def retrieval() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        la, lo, _, _ = bl.refine_with_retrieval(
            _np(pred.hyp_lat), _np(pred.hyp_lon), _np(pred.hyp_cell), _np(pred.hyp_prob), test_fused, train_fused,
            train.lat, train.lon, tcell, k=opts.retrieval_k, alpha=opts.retrieval_alpha)
        return la, lo, _np(pred.province)

    timed("geopak_retrieval", retrieval)
    timed("prior", lambda: (*bl.prior_predict(train.lat, train.lon, len(test)), None))
    timed("knn", lambda: bl.knn_predict(train_fused, train.lat, train.lon, test_fused, k=opts.knn_k,
                                        train_province=train.province))

    def flat() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = bl.train_flat_cells(train, table.n_cells, epochs=opts.baseline_epochs, seed=opts.seed)
        return bl.predict_flat_cells(m, test, centers, cell_prov)

    timed("flat_cells", flat)

    def regression() -> tuple[np.ndarray, np.ndarray, None]:
        m = bl.train_regression(train, epochs=opts.baseline_epochs, seed=opts.seed)
        return (*bl.predict_regression(m, test), None)

    timed("regression", regression)

    cfg = _train_config(predictor, opts)
    if cfg is not None:
        counts = np.bincount(train.province, minlength=NUM_PROVINCES)
        bias = province_prior_shift(cfg, counts)
        metrics_note = ", ".join(f"{PROVINCE_NAMES[p]} {bias[p]:+.2f}" for p in range(NUM_PROVINCES) if counts[p])
        notes.append(f"geopak_prior_adjusted adds to the province logits: {metrics_note}.")
        timed("geopak_prior_adjusted", lambda: from_pred(_mixture_all(
            model, outs, province_bias=torch.as_tensor(bias, dtype=torch.float32), **kw)))
    else:
        notes.append("geopak_prior_adjusted was skipped: the checkpoint records no training config.")

    if opts.retrain:
        res.update(_retrained(predictor, df, where, rows, table, cells_dir, out, opts, kw, say, notes))
    else:
        notes.append("Retrained ablations (geopak_heads_only, geopak_no_smoothing, geopak_no_gate) were skipped "
                     "(--no-retrain).")
    return res


def _description(name: str) -> str:
    if name in METHODS:
        return METHODS[name]
    return RETRAINED[name][0] if name in RETRAINED else name


def _train_config(predictor: GeopakPredictor, opts: EvalOptions) -> Any:
    """The training config: ``opts.train_config`` (name or TOML), else the checkpoint's, else None."""
    from geopak.train.config import config_from_dict, load_config

    if opts.train_config is not None:
        return load_config(opts.train_config)
    meta = getattr(predictor.model, "checkpoint_meta", {}) or {}
    if (meta.get("extra") or {}).get("train_config"):
        return config_from_dict(meta["extra"]["train_config"], f"{predictor.checkpoint_path} training config")
    return None


def _own_export(meta: dict[str, Any], phase: str, table: CellTable) -> Path | None:
    """The checkpoint's own training run's export of ``phase``, when it exists and uses the same cell table."""
    run = (meta.get("extra") or {}).get("run")
    d = Path(run) / phase if run else None
    if d is None or not (d / "config.json").exists() or not (d / "model.safetensors").exists():
        return None
    try:
        cells_hash = json.loads((d / "config.json").read_text())["cells"]["hash"]
    except (KeyError, ValueError, TypeError):
        return None
    return d if cells_hash == table.content_hash else None


def _retrained(
    predictor: GeopakPredictor, df: pd.DataFrame, where: str, rows: pd.DataFrame, table: CellTable,
    cells_dir: Path | None, out: Path, opts: EvalOptions, kw: dict[str, Any], say: Callable[[str], None],
    notes: list[str],
) -> dict[str, _Result]:
    """Heads-only retrains (phases with frozen encoders) of the reference config and two ablations."""
    from geopak.model.geopak import GeopakModel
    from geopak.train import train

    meta = getattr(predictor.model, "checkpoint_meta", {}) or {}
    cfg = _train_config(predictor, opts)
    if cfg is None:
        notes.append("Retrained ablations were skipped: the checkpoint records no training config "
                     "(pass --train-config NAME|TOML).")
        logger.warning("no training config in the checkpoint: retrained ablations skipped")
        return {}
    phases = [p.name for p in cfg.phases if p.enabled and p.frozen_encoders]
    if not phases:
        notes.append(f"Retrained ablations were skipped: config {cfg.name!r} has no frozen-encoder phase.")
        return {}
    train_df = df[df["split"].astype(str).str.lower().isin(["train", "val"])]
    cells_arg: Any = cells_dir if cells_dir is not None else table
    cache_dir = out / "ablations" / "cache"
    res: dict[str, _Result] = {}
    for name, (desc, overrides) in RETRAINED.items():
        say(f"compare: {name} (retraining {', '.join(phases)})")
        t0 = time.perf_counter()
        ovr = {"data.cache_dir": str(cache_dir), "trainer.progress_bar": False, "trainer.tensorboard": False,
               **overrides}
        run_dir = out / "ablations" / name
        own = _own_export(meta, phases[-1], table) if not overrides and opts.retrain_max_steps is None else None
        if own is not None:  # the checkpoint's own run already trained exactly this: reuse its export
            ckpt = own
            notes.append(f"{name} reuses the training run's own {phases[-1]} export ({own}) instead of retraining it.")
        else:
            ckpt = train(cfg.with_overrides(ovr), train_df, cells_arg, run_dir, phases=phases,
                         max_steps=opts.retrain_max_steps)
        m = GeopakModel.from_checkpoint(ckpt).to(predictor.device).eval()
        clip, scene = _features(predictor, rows, out / "features" / f"{opts.split}-ablation-encoders", opts, model=m)
        cal = (m.checkpoint_meta.get("extra") or {}).get("calibration") or {}
        m_kw = {**kw, "province_temperature": float(cal.get("province_temperature", 1.0)),
                "cell_temperature": float(cal.get("cell_temperature", 1.0))}  # each model its own calibration
        p = _mixture_all(m, _heads(m, clip, scene, predictor.device), **m_kw)
        res[name] = _Result(_np(p.lat), _np(p.lon), _np(p.province), desc, time.perf_counter() - t0)
    notes.append(
        f"geopak_heads_only / geopak_no_smoothing / geopak_no_gate were retrained here ({', '.join(phases)} of "
        f"config {cfg.name!r}) from the config's starting encoders, which they share with each other (one feature "
        "cache); compare them with each other. They match `geopak` only when the checkpoint itself is a phase-0/1 "
        f"model (this one: {meta.get('phase')!r})."
    )
    return res
