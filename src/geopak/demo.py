"""`geopak demo`: the whole pipeline end to end on GeoPak-Synth, offline, on a CPU, with one report.

Stages (each writes into its own folder under ``out``):

1. ``data/``      GeoPak-Synth images + manifest + card + contact sheet;
2. ``pretrain/``  (``DemoOptions.pretrain``, on by default) a *separate* GeoPak-Synth set (seed + 1000, equal
   province proportions, at the config's image size) in ``pretrain/data/``, on whose **scene attributes** (never
   its locations) both small encoders are pretrained (:func:`geopak.model.pretrain.pretrain_encoders`): the
   offline stand-in for CLIP / Places365 weights, which the training config then starts from
   (``weights.clip`` / ``weights.scene``). The folder survives the overwrite cleanup, so a rerun with the same
   settings reuses the weights instead of pretraining again;
3. ``validated/`` the validated manifest, rejects and summary;
4. ``split``      a seeded, province-stratified train/val/test split (written to ``validated/split.parquet``);
5. ``cells/``     geocells built from the *training* rows only (table, assignments, report, map);
6. ``run/``       training phases 0-1-2 with the named config (feature cache for the frozen phases);
7. ``eval/``      end-to-end evaluation on the held-out test split, with every baseline and ablation;
8. ``predictions/`` a handful of test images predicted through :class:`~geopak.inference.GeopakPredictor`,
   each drawn on a map with its hypotheses;

then ``report.html`` (with ``report.md`` beside it), ``metrics.json`` and ``compare.json`` at the top of ``out``
and the final checkpoint in ``out/checkpoint``.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geopak.provinces import PROVINCE_NAMES, PROVINCES

logger = logging.getLogger(__name__)

__all__ = ["DemoOptions", "DemoResult", "run_demo"]


@dataclass
class DemoOptions:
    """Settings of :func:`run_demo` (defaults: the README's main job, under 10 minutes on 2 CPU cores)."""

    out: Path = Path("demo_out")
    n: int = 4000
    """Images of GeoPak-Synth to generate."""
    seed: int = 0
    image_size: int = 128
    """Side of the generated images (the tiny config trains at 96 px)."""
    config: str = "tiny"
    """Training config (name or TOML path)."""
    min_cluster_size: int = 20
    """Minimum images per geocell (the seed's 40 leaves the rare provinces a single cell at demo scale)."""
    val_fraction: float = 0.1
    test_fraction: float = 0.15
    max_steps: int | None = None
    """Cap every training phase at this many steps (quick runs and tests)."""
    baseline_epochs: int = 30
    n_predict: int = 6
    """Test images predicted and drawn one by one in the report."""
    workers: int | None = None
    boundaries: Path | None = None
    """Province boundaries (GeoJSON/shapefile) for labels and maps; default: cached file or offline fallback."""
    overwrite: bool = True
    pretrain: bool = True
    """Pretrain the encoders on the scene attributes of a separate GeoPak-Synth set first (see the module doc);
    False starts them from random weights."""
    pretrain_n: int = 3000
    """Images of the separate pretraining set."""
    pretrain_epochs: int = 8
    """Pretraining epochs per encoder."""


@dataclass
class DemoResult:
    report: Path
    metrics: dict[str, Any]
    compare: list[dict[str, Any]]
    checkpoint: Path
    timings: dict[str, float] = field(default_factory=dict)


class _Stages:
    """Times each stage and reports it through a status callback."""

    def __init__(self, say: Callable[[str], None], total: int) -> None:
        self.say = say
        self.total = total
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, what: str) -> Iterator[None]:
        self.say(f"[{len(self.timings) + 1}/{self.total}] {what}")
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.say(f"      done in {self.timings[name]:.1f} s")


def run_demo(opts: DemoOptions, say: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole pipeline; see the module docstring for what it writes."""
    from geopak.data.splits import split_manifest
    from geopak.data.synth import generate, preview
    from geopak.data.validate import validate_file
    from geopak.evaluate.runner import EvalOptions, evaluate_checkpoint
    from geopak.geocells import CellConfig, build_and_write, validate_points
    from geopak.train import load_config, train

    say = say or (lambda m: logger.info("%s", m))
    cfg = load_config(opts.config)
    out = Path(opts.out).resolve()
    if out.exists() and opts.overwrite:
        # pretrain/ stays: pretrain_encoders reuses it when settings and data match, and replaces it otherwise
        for sub in ("data", "validated", "cells", "run", "eval", "predictions", "checkpoint"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    stage = _Stages(say, 9 if opts.pretrain else 8)
    t_all = time.perf_counter()

    with stage("synth", f"GeoPak-Synth: rendering {opts.n:,} images at {opts.image_size} px"):
        generate(opts.n, out / "data", seed=opts.seed, size=opts.image_size, workers=opts.workers,
                 boundaries=opts.boundaries, overwrite=True,
                 command=f"geopak demo --n {opts.n} --seed {opts.seed}")
        sheet = preview(out / "data", out / "data" / "contact_sheet.png")

    pretrained: dict[str, Any] | None = None
    if opts.pretrain:
        with stage("pretrain", f"pretraining the encoders on the scene attributes of a separate GeoPak-Synth set "
                               f"({opts.pretrain_n:,} images, seed {opts.seed + 1000})"):
            cfg, pretrained = _pretrain(cfg, out / "pretrain", opts, say)

    with stage("validate", "validating the manifest (every row accepted or rejected with a reason)"):
        vsum = validate_file(out / "data" / "manifest.parquet", out / "validated", boundaries=opts.boundaries)
        say(f"      {vsum['accepted']:,} accepted, {vsum['rejected']:,} rejected of {vsum['input']:,}")

    with stage("split", "splitting train/val/test (seeded, stratified by province)"):
        from geopak.data.manifest import read_manifest, write_manifest

        df = read_manifest(out / "validated" / "manifest.parquet")
        df = split_manifest(df, method="random", val=opts.val_fraction, test=opts.test_fraction, seed=opts.seed)
        manifest_path = out / "validated" / "split.parquet"
        write_manifest(df, manifest_path)
        split_counts = df["split"].value_counts().to_dict()

    with stage("cells", "building geocells from the training rows (per-province HDBSCAN)"):
        train_rows = df[df["split"] == "train"]
        cell_cfg = CellConfig(min_cluster_size=opts.min_cluster_size, min_samples=min(10, opts.min_cluster_size),
                              seed=opts.seed)
        points = validate_points(train_rows, source=str(manifest_path))
        table, _, check, _, _ = build_and_write(points, out / "cells", cell_cfg, source=str(manifest_path),
                                                boundaries=opts.boundaries)
        say(f"      {table.n_cells} cells; {check.summary().splitlines()[0]}")

    with stage("train", f"training phases with the '{opts.config}' config"):
        ckpt = train(cfg, manifest_path, out / "cells", out / "run", max_steps=opts.max_steps, progress_bar=True)
        final_ckpt = out / "checkpoint"
        shutil.copytree(ckpt, final_ckpt, dirs_exist_ok=True)

    with stage("evaluate", "evaluating end to end on the test split, with baselines and ablations"):
        eval_opts = EvalOptions(split="test", compare=True, cells=out / "cells", seed=opts.seed,
                                baseline_epochs=opts.baseline_epochs, retrain_max_steps=opts.max_steps,
                                boundaries=opts.boundaries, progress=False)
        metrics = evaluate_checkpoint(final_ckpt, manifest_path, out / "eval", eval_opts, status=say)
        compare = json.loads((out / "eval" / "compare.json").read_text())
        metrics_clean = {k: v for k, v in metrics.items() if k != "compare"}
        (out / "metrics.json").write_text(json.dumps(metrics_clean, indent=1, default=str))
        (out / "compare.json").write_text(json.dumps(compare, indent=1, default=str))

    with stage("predict", f"predicting {opts.n_predict} test images through GeopakPredictor"):
        examples = _predict_examples(final_ckpt, df, out / "predictions", opts)

    with stage("report", "writing the report"):
        curves = _plot_training_curves(out / "run", out / "run" / "curves.png")
        report = _write_report(out, opts, vsum, split_counts, table, check, metrics_clean, compare, examples,
                               sheet, curves, stage.timings, time.perf_counter() - t_all, pretrained)
    return DemoResult(report, metrics_clean, compare, final_ckpt, stage.timings)


# ------------------------------------------------------------------------------------------ stages
def _pretrain(cfg: Any, folder: Path, opts: DemoOptions, say: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """Generate the separate pretraining set, pretrain both encoders on its scene attributes (or reuse an
    earlier result) and return the training config starting from those weights, with a summary for the report."""
    from geopak.data.synth import generate
    from geopak.model.pretrain import PretrainConfig, pretrain_encoders
    from geopak.provinces import PROVINCE_NAMES

    seed, size = opts.seed + 1000, cfg.data.image_size
    generate(opts.pretrain_n, folder / "data", seed=seed, size=size, workers=opts.workers,
             proportions={name: 1.0 for name in PROVINCE_NAMES}, boundaries=opts.boundaries, overwrite=True,
             command=f"geopak synth --n {opts.pretrain_n} --seed {seed} --size {size} --proportions equal")
    pcfg = PretrainConfig(clip_encoder=cfg.model.clip_encoder, scene_encoder=cfg.model.scene_encoder,
                          epochs=opts.pretrain_epochs, seed=opts.seed, threads=cfg.trainer.num_threads or None)

    def on_event(ev: dict[str, Any]) -> None:
        if ev["event"] == "epoch":
            held = f", held-out loss {ev['holdout_loss']:.3f}" if "holdout_loss" in ev else ""
            say(f"      {ev['role']} {ev['encoder']} epoch {ev['epoch']}/{ev['epochs']}: train loss "
                f"{ev['train_loss']:.3f}{held} ({ev['seconds']:.0f} s)")

    result = pretrain_encoders(folder / "data", folder, pcfg, callback=on_event)
    if result.reused:
        say(f"      reusing {folder} (same settings and data)")
    summary = {"seed": seed, "n": opts.pretrain_n, "size": size, "epochs": opts.pretrain_epochs,
               "reused": result.reused, "seconds": result.summary["seconds"],
               "n_holdout": result.summary["data"]["n_holdout"], "encoders": {}}
    for role in ("clip", "scene"):
        rec = result.summary["encoders"][role]
        summary["encoders"][role] = {"encoder": rec["encoder"], "holdout": rec["holdout"],
                                     "text": result.describe_holdout(role)}
        say(f"      {role} {rec['encoder']} held out: {summary['encoders'][role]['text']}")
    cfg = cfg.with_overrides({"weights.clip": str(result.clip_weights), "weights.scene": str(result.scene_weights)})
    return cfg, summary


def _predict_examples(ckpt: Path, df: pd.DataFrame, out: Path, opts: DemoOptions) -> list[dict[str, Any]]:
    """Predict a few test images (one per province where possible) and draw each on a map."""
    from geopak.evaluate.report import plot_prediction, province_outlines
    from geopak.geo import haversine_km
    from geopak.inference import GeopakPredictor

    test = df[df["split"] == "test"]
    picks = (test.groupby("province", sort=False).head(1)).head(opts.n_predict)
    if len(picks) < opts.n_predict:
        rest = test.drop(picks.index).sample(frac=1.0, random_state=opts.seed)
        picks = pd.concat([picks, rest.head(opts.n_predict - len(picks))])
    predictor = GeopakPredictor(checkpoint_path=ckpt)
    results = predictor.predict(list(picks["path"]))
    out.mkdir(parents=True, exist_ok=True)
    polygons = province_outlines(opts.boundaries)
    examples = []
    for i, (row, res) in enumerate(zip(picks.itertuples(index=False), results)):
        err = float(haversine_km(res["lat"], res["lon"], row.lat, row.lon))
        rec = dict(res, true_lat=float(row.lat), true_lon=float(row.lon))
        png = plot_prediction(rec, out / f"prediction_{i}.png", polygons=polygons,
                              title=f"true: {row.province} | predicted: {res['province']} | error {err:.0f} km")
        dest = out / f"image_{i}{Path(row.path).suffix}"
        shutil.copyfile(row.path, dest)
        examples.append({"id": row.id, "image": dest, "map": png, "true_province": row.province,
                         "province": res["province"], "lat": res["lat"], "lon": res["lon"],
                         "confidence": res["confidence"], "radius_km": res.get("radius_km"), "error_km": err})
    (out / "predictions.json").write_text(json.dumps(examples, indent=1, default=str))
    return examples


def _plot_training_curves(run: Path, path: Path) -> Path | None:
    """Validation macro median km and province accuracy per epoch, phases one after another."""
    from geopak.evaluate.report import _plt

    rows = []
    for pdir in sorted(p for p in run.iterdir() if p.is_dir() and (p / "phase_summary.json").exists()):
        s = json.loads((pdir / "phase_summary.json").read_text())
        for h in s.get("history", []):
            rows.append({"phase": s["phase"], **h})
    if not rows:
        return None
    hist = pd.DataFrame(rows)
    hist["x"] = np.arange(len(hist))
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, g in hist.groupby("phase", sort=False):
        if "val/macro_median_km" in g:
            axes[0].plot(g["x"], g["val/macro_median_km"], marker="o", ms=3, label=name)
        if "val/province_accuracy" in g:
            axes[1].plot(g["x"], g["val/province_accuracy"], marker="o", ms=3, label=name)
    axes[0].set_title("validation macro median error (km), end to end")
    axes[0].set_xlabel("epoch (all phases)")
    axes[1].set_title("validation province accuracy")
    axes[1].set_xlabel("epoch (all phases)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ report
_KEYS = ("macro_median_km", "median_km", "mean_km", "p90_km", "acc_25km", "acc_100km", "geoscore",
         "province_accuracy")


def _fmt(v: Any, key: str = "") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if key.startswith("acc_") or key == "province_accuracy":
        return f"{100 * float(v):.1f}%"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return str(v)


def headline(metrics: dict[str, Any], compare: list[dict[str, Any]]) -> list[str]:
    """Plain sentences on how GEOPAK stands against every baseline (also where it does not win)."""
    by = {r["method"]: r for r in compare}
    g = by.get("geopak", metrics)
    lines = [
        (f"GEOPAK (mixture of hypotheses, end to end) on {g.get('n', metrics.get('n'))} held-out test images: "
         f"macro median error {_fmt(g.get('macro_median_km'))} km (mean over provinces of each province's median), "
         f"plain median {_fmt(g.get('median_km'))} km, province accuracy {_fmt(g.get('province_accuracy'), 'acc_')}.")
    ]
    baselines = [n for n in ("prior", "knn", "flat_cells", "regression") if n in by]
    ablations = [n for n in by if n != "geopak" and n not in baselines]
    for key, label in (("macro_median_km", "macro median"), ("median_km", "plain median")):
        for group, names in (("baselines", baselines), ("ablations and variants", ablations)):
            ahead, level, behind = [], [], []
            for name in names:
                r = by[name]
                if r.get(key) is None or g.get(key) is None:
                    continue
                bucket = level if abs(g[key] - r[key]) < 0.05 else ahead if g[key] < r[key] else behind
                bucket.append(f"{name} ({_fmt(r[key])} km)")
            if level:
                lines.append(f"On the {label}, GEOPAK is level with these {group}: {', '.join(level)}.")
            if ahead:
                lines.append(f"On the {label}, GEOPAK is ahead of these {group}: {', '.join(ahead)}.")
            if behind:
                lines.append(f"On the {label}, GEOPAK does NOT beat these {group}: {', '.join(behind)}.")
    return lines


def _table_html(compare: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ("method", *_KEYS))
    body = []
    for r in compare:
        cls = ' class="geopak"' if r["method"] == "geopak" else ""
        cells = "".join(f"<td>{_fmt(r.get(k), k)}</td>" for k in _KEYS)
        body.append(f"<tr{cls}><td>{html.escape(r['method'])}</td>{cells}</tr>")
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _table_md(compare: list[dict[str, Any]]) -> str:
    lines = ["| method | " + " | ".join(_KEYS) + " |", "|---" * (len(_KEYS) + 1) + "|"]
    for r in compare:
        lines.append(f"| {r['method']} | " + " | ".join(_fmt(r.get(k), k) for k in _KEYS) + " |")
    return "\n".join(lines)


def _rel(p: Path | None, root: Path) -> str | None:
    return None if p is None or not Path(p).exists() else str(Path(p).resolve().relative_to(root))


def _pretrain_text(pretrained: dict[str, Any] | None) -> tuple[str, str, str]:
    """(intro phrase on the encoders, HTML paragraph, Markdown paragraph) about the scene pretraining."""
    if not pretrained:
        return "tiny randomly initialised encoders", "", ""
    enc = pretrained["encoders"]
    names = f"{enc['clip']['encoder']} and {enc['scene']['encoder']}"
    reused = " (reused from an earlier run with the same settings and data)" if pretrained.get("reused") else ""
    text = (
        f"The small encoders ({names}) were pretrained on scene attributes, not locations, of a disjoint synthetic "
        f"set: GeoPak-Synth with seed {pretrained['seed']} ({pretrained['n']:,} images at {pretrained['size']} px, "
        f"equal province proportions), {pretrained['epochs']} epoch{'s' if pretrained['epochs'] != 1 else ''} each, {pretrained['seconds']:.0f} s{reused}. "
        "Each learned to predict how urban, high, rough, green, near the coast and clear a scene is, how settled "
        "its surroundings are, and its time of day, season, weather and kind of shot. Some of these attributes vary "
        "with place, as real scene pretraining does; no coordinate, province or settlement name was used. "
        "Training starts from these weights (phase 0 onwards)."
    )
    held = [f"{e['encoder']}: {e['text']}" for e in (enc["clip"], enc["scene"])]
    n_hold = pretrained.get("n_holdout")
    head = f"Held out ({n_hold:,} images of the pretraining set; R2, or accuracy with the majority class's)"
    html_par = (f"<p>{html.escape(text)} Files: <code>pretrain/clip.safetensors</code>, "
                f"<code>pretrain/scene.safetensors</code>; every figure in <code>pretrain/pretrain.json</code>.</p>"
                f"<p>{html.escape(head)}:</p><ul>{''.join(f'<li>{html.escape(h)}</li>' for h in held)}</ul>")
    md_par = "\n".join([f"**Encoders.** {text}", "", f"{head}:", *[f"- {h}" for h in held]])
    return f"tiny encoders pretrained on scene attributes of a disjoint synthetic set ({names})", html_par, md_par


def _write_report(
    out: Path, opts: DemoOptions, vsum: dict[str, Any], split_counts: dict[str, int], table: Any, check: Any,
    metrics: dict[str, Any], compare: list[dict[str, Any]], examples: list[dict[str, Any]], sheet: Path,
    curves: Path | None, timings: dict[str, float], total_s: float, pretrained: dict[str, Any] | None = None,
) -> Path:
    run_summary = json.loads((out / "run" / "summary.json").read_text())
    eval_dir = out / "eval"
    figures = [(t, _rel(eval_dir / f, out)) for t, f in (
        ("Error CDF (end to end, every method)", "error_cdf.png"), ("Map of errors", "error_map.png"),
        ("Province confusion matrix", "confusion.png"), ("Calibration: confidence vs error", "calibration.png"))]
    lines = headline(metrics, compare)
    cells_per = ", ".join(f"{p.short} {n}" for p, n in zip(PROVINCES, table.counts_per_province))
    phases = run_summary.get("phases", {})
    phase_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v.get('epochs')}</td><td>{v.get('global_step')}</td>"
        f"<td>{'yes' if v.get('cached') else 'no'}</td>"
        f"<td>{_fmt((v.get('val') or {}).get('macro_median_km'))}</td>"
        f"<td>{_fmt((v.get('val') or {}).get('province_accuracy'), 'acc_')}</td>"
        f"<td>{_fmt((v.get('val') or {}).get('balanced_province_accuracy'), 'acc_')}</td>"
        f"<td>{_fmt(v.get('wall_seconds'))}</td>"
        f"<td>{'kept the previous phase (no validation gain)' if v.get('kept_previous_weights') else 'own'}</td></tr>"
        for k, v in phases.items()
    )
    warnings = [w.get("message", str(w)) if isinstance(w, dict) else str(w)
                for w in run_summary.get("monitor_warnings") or []]
    ex_html = "".join(
        f"<figure class='ex'><img src='{_rel(e['image'], out)}' alt='test image {html.escape(str(e['id']))}'>"
        f"<img src='{_rel(e['map'], out)}' alt='prediction map'><figcaption>true {html.escape(e['true_province'])}, "
        f"predicted {html.escape(e['province'])} (confidence {e['confidence']:.2f}), error {e['error_km']:.0f} km"
        f"</figcaption></figure>"
        for e in examples
    )
    encoders_note, pretrain_html, pretrain_md = _pretrain_text(pretrained)
    timing_rows = "".join(f"<tr><td>{k}</td><td>{v:.1f} s</td></tr>" for k, v in timings.items())
    fig_html = "".join(f"<figure><img src='{src}' alt='{html.escape(t)}'><figcaption>{html.escape(t)}</figcaption>"
                       f"</figure>" for t, src in figures if src)
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GEOPAK demo report</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
h1{{margin-bottom:0}} table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:4px 8px;
text-align:right}} td:first-child,th:first-child{{text-align:left}} tr.geopak{{font-weight:bold;background:#eef6ee}}
.wide{{overflow-x:auto}} figure{{margin:1em 0}} img{{max-width:100%}} .ex{{display:grid;grid-template-columns:160px 1fr;gap:8px;
align-items:center}} .ex figcaption{{grid-column:1/3}} .note{{background:#fff8e1;padding:.6em 1em;border-left:4px solid
#f0b400}} code{{background:#f4f4f4;padding:1px 4px}}
</style></head><body>
<h1>GEOPAK demo report</h1>
<p>Synthetic data (GeoPak-Synth, {opts.n:,} images, seed {opts.seed}), {html.escape(encoders_note)}, CPU only.
Every figure below is an end-to-end prediction on held-out test images: no ground-truth cell or province is given
to the model. Total time {total_s / 60:.1f} min.</p>
<h2>Headline</h2>
<ul>{''.join(f'<li>{html.escape(s)}</li>' for s in lines)}</ul>
<h2>Comparison (test split, {metrics.get('n')} images)</h2>
{_table_html(compare)}
<p>Methods: <code>prior</code> predicts the training set's geometric median; <code>knn</code> retrieves the nearest
training images by fused embedding; <code>flat_cells</code> is a geocell classifier without the province hierarchy;
<code>regression</code> regresses lat/lon directly; the <code>geopak_*</code> rows are ablations. See
<code>eval/compare.md</code> for the descriptions and <code>compare.json</code> for every figure.</p>
{fig_html}
<h2>Dataset</h2>
<p>{vsum['input']:,} rows: {vsum['accepted']:,} accepted, {vsum['rejected']:,} rejected
(<code>validated/rejects.csv</code>). Split: {', '.join(f'{k} {v:,}' for k, v in sorted(split_counts.items()))}.
The data card is <code>data/CARD.md</code>.</p>
<figure><img src="{_rel(sheet, out)}" alt="contact sheet: one row per province"><figcaption>Contact sheet, one row per
province ({', '.join(PROVINCE_NAMES)}).</figcaption></figure>
<h2>Geocells</h2>
<p>{table.n_cells} cells from the training rows ({cells_per}); minimum {opts.min_cluster_size} images per cell.
{html.escape(check.summary().splitlines()[0])}</p>
<figure><img src="{_rel(out / 'cells' / 'cells.png', out)}" alt="map of geocells"></figure>
<h2>Training</h2>
{pretrain_html}
<table><thead><tr><th>phase</th><th>epochs</th><th>steps</th><th>cached features</th><th>val macro median km</th>
<th>val province acc.</th><th>balanced (mean recall)</th><th>seconds</th><th>exported weights</th></tr></thead><tbody>{phase_rows}</tbody></table>
{'<div class="note">Monitor warnings:<ul>' + ''.join(f'<li>{html.escape(w)}</li>' for w in warnings) + '</ul></div>'
  if warnings else ''}
{f'<figure><img src="{_rel(curves, out)}" alt="training curves"></figure>' if curves else ''}
<h2>Predictions on test images</h2>
{ex_html}
<h2>Time per stage</h2>
<table>{timing_rows}</table>
<p>Reproduce: <code>geopak demo --out {html.escape(str(opts.out))} --n {opts.n} --seed {opts.seed}</code>.
Checkpoint: <code>checkpoint/</code> (load it with <code>GeopakPredictor(checkpoint_path=...)</code>).</p>
</body></html>
"""
    path = out / "report.html"
    path.write_text(doc)
    md = ["# GEOPAK demo report", "", *[f"- {s}" for s in lines], "", _table_md(compare), "",
          *([pretrain_md, ""] if pretrain_md else []),
          f"Report with figures: report.html. Timings: {json.dumps(timings)}", ""]
    (out / "report.md").write_text("\n".join(md))
    (out / "demo.json").write_text(json.dumps({"options": {k: str(v) for k, v in asdict(opts).items()},
                                               "timings": timings, "total_seconds": round(total_s, 1),
                                               "pretrain": pretrained}, indent=1, default=str))
    return path
