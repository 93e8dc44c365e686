"""Inference: the batched mixture of hypotheses and :class:`GeopakPredictor`.

The mixture follows the seed: the top-2 provinces x the top-5 geocells of each, ``p_i = P(province) x
P(cell | province)`` renormalised over the hypotheses, ``prediction_i = cell centre + offset_i`` and the
final position = the p-weighted mean *on the sphere*. Everything is batched: one top-k per level, one gather,
and all hypotheses' offsets in one ``model.predict_offset_positions`` call.

Definitions (they are what :mod:`geopak.evaluate` calibrates):

- ``province_probs``: softmax of the province head with provinces that have no geocells masked out (they
  cannot be located), so it sums to 1 over the provinces with cells. ``province`` is its argmax.
- ``confidence``: the model's probability that the photo lies within ``confidence_km`` (25 km, "city level")
  of the returned position: the sum of ``P(province) x P(cell | province)`` over *all* cells (not only the
  hypotheses) whose centre is within that distance of it. It is in [0, 1] and is directly comparable with the
  measured fraction of errors under 25 km.
- ``radius_km``: the p-weighted mean distance of the hypotheses to the returned position (their dispersion);
  0 when the hypotheses agree.
- Hypotheses are ordered province-major (best province first, its cells best first). When a chosen province
  has fewer cells than ``top_cells`` the missing slots have ``hyp_cell = -1``, ``hyp_prob = 0`` and NaN
  positions.
- ``mode="argmax"`` returns the first hypothesis (best province, its best cell, that cell's offset) instead of
  the mean; ``use_offsets=False`` uses the bare cell centres (ablations).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from geopak import geo
from geopak.provinces import PROVINCE_NAMES

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONFIDENCE_KM", "GeopakPredictor", "Prediction", "bf16_default", "mixture", "resolve_checkpoint"]

DEFAULT_CONFIDENCE_KM = 25.0
"""Radius of the ``confidence`` mass (km)."""


@dataclass
class Prediction:
    """Batched mixture output (tensors, float32 unless noted); see the module docstring for definitions."""

    lat: torch.Tensor
    """(B,) degrees (float64; float32 on MPS)."""
    lon: torch.Tensor
    """(B,) degrees (float64; float32 on MPS)."""
    province: torch.Tensor
    """(B,) int64 argmax province id."""
    province_probs: torch.Tensor
    """(B, 7)."""
    confidence: torch.Tensor
    """(B,) probability mass within ``confidence_km`` of (lat, lon)."""
    radius_km: torch.Tensor
    """(B,) p-weighted mean distance of the hypotheses to (lat, lon)."""
    hyp_lat: torch.Tensor
    """(B, H) degrees, same dtype as ``lat``."""
    hyp_lon: torch.Tensor
    """(B, H) degrees."""
    hyp_prob: torch.Tensor
    """(B, H), sums to 1 over each row."""
    hyp_cell: torch.Tensor
    """(B, H) int64 global cell ids (-1 for an empty slot)."""

    def __len__(self) -> int:
        return int(self.lat.shape[0])

    def to(self, device: str | torch.device) -> Prediction:
        """A copy with every tensor on ``device``."""
        return Prediction(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(preds: list[Prediction]) -> Prediction:
        """Concatenate predictions along the batch (all must have the same number of hypotheses)."""
        if not preds:
            raise ValueError("Prediction.cat needs at least one prediction")
        return Prediction(**{f.name: torch.cat([getattr(p, f.name) for p in preds]) for f in fields(Prediction)})


def _as_long(x: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x, device=device).long()


@torch.no_grad()
def mixture(
    model: Any,
    out: Any,
    top_provinces: int = 2,
    top_cells: int = 5,
    mode: Literal["mixture", "median", "argmax"] = "mixture",
    use_offsets: bool = True,
    confidence_km: float = DEFAULT_CONFIDENCE_KM,
    province_bias: torch.Tensor | None = None,
    province_temperature: float = 1.0,
    cell_temperature: float = 1.0,
) -> Prediction:
    """The mixture of hypotheses for a batch of model outputs.

    Args:
        model: a :class:`geopak.model.geopak.GeopakModel` (or anything with its ``padded_index (7,K)``,
            ``cell_centers (N,2)`` buffers and ``predict_offset_positions(fused, cell_ids)``).
        out: the model's :class:`~geopak.model.geopak.GeopakOutput` for the batch (``province_logits``,
            ``cell_logits``, ``fused``).
        top_provinces: provinces kept per image (capped at the number of provinces with cells).
        top_cells: cells kept per chosen province (capped at K).
        mode: ``"mixture"`` (p-weighted spherical mean, the seed's rule), ``"median"`` (p-weighted spherical
            geometric median: the smallest expected error in km, and it stays on the heavier mode when the
            hypotheses split between distant places) or ``"argmax"`` (the first hypothesis).
        use_offsets: add the offset head's refinement to each cell centre; ``False`` = bare centres.
        confidence_km: radius of the confidence mass.
        province_bias: optional ``(7,)`` added to the province logits first (e.g. a logit adjustment from the
            balanced training prior back to the data's prior; see
            :func:`province_logit_adjustment`).
        province_temperature, cell_temperature: divide the province / cell logits by these before the softmax
            (post-hoc calibration fitted on validation data, see :func:`fit_temperatures`; 1 = raw).

    Returns:
        A :class:`Prediction` with H = top_provinces x top_cells hypotheses (after capping).
    """
    if mode not in ("mixture", "median", "argmax"):
        raise ValueError(f"mode must be 'mixture', 'median' or 'argmax', got {mode!r}")
    if top_provinces < 1 or top_cells < 1:
        raise ValueError(f"top_provinces and top_cells must be >= 1, got {top_provinces}, {top_cells}")
    if province_temperature <= 0 or cell_temperature <= 0:
        raise ValueError(f"temperatures must be > 0, got {province_temperature}, {cell_temperature}")
    plog = out.province_logits.float() / province_temperature
    device = plog.device
    if province_bias is not None:
        plog = plog + torch.as_tensor(province_bias, device=device, dtype=plog.dtype)
    b = plog.shape[0]
    pidx = _as_long(model.padded_index, device)  # (7, K)
    pos_dtype = torch.float32 if device.type == "mps" else torch.float64  # positions: keep metres exact
    centers = torch.as_tensor(model.cell_centers, device=device).to(pos_dtype)  # (N, 2)
    k = pidx.shape[1]
    valid_cell = pidx >= 0  # (7, K)
    has_cells = valid_cell.any(dim=1)  # (7,)
    if not bool(has_cells.any()):
        raise ValueError("the model's cell table has no cells")

    pprob = torch.softmax(plog.masked_fill(~has_cells, float("-inf")), dim=1)  # (B, 7)
    kp = min(int(top_provinces), int(has_cells.sum()))
    kc = min(int(top_cells), k)
    top_pp, top_pi = pprob.topk(kp, dim=1)  # (B, kp)

    clog = (out.cell_logits.float() / cell_temperature).masked_fill(~valid_cell, float("-inf"))  # (B, 7, K)
    # Cells of provinces without cells are all -inf: give them a finite row so softmax stays NaN-free.
    clog_safe = clog.masked_fill(~has_cells[:, None], 0.0)
    cprob_all = torch.softmax(clog_safe, dim=2) * valid_cell  # (B, 7, K) P(cell | province)
    sel = cprob_all.gather(1, top_pi[:, :, None].expand(b, kp, k))  # (B, kp, K)
    top_cp, top_ci = sel.topk(kc, dim=2)  # (B, kp, kc)
    cell = pidx[top_pi[:, :, None], top_ci]  # (B, kp, kc) global ids, -1 on padding
    valid = cell >= 0
    joint = (top_pp[:, :, None] * top_cp).masked_fill(~valid, 0.0)
    h = kp * kc
    cell = cell.reshape(b, h)
    valid = valid.reshape(b, h)
    joint = joint.reshape(b, h)
    p = joint / joint.sum(dim=1, keepdim=True).clamp_min(1e-30)
    # The top-1 cell of every chosen province is valid; use it to fill empty slots for the batched call.
    fill = cell[:, ::kc].repeat_interleave(kc, dim=1)
    cell_safe = torch.where(valid, cell, fill)

    if use_offsets:
        hlat, hlon = model.predict_offset_positions(out.fused, cell_safe)
        hlat, hlon = hlat.to(pos_dtype), hlon.to(pos_dtype)
    else:
        hlat, hlon = centers[cell_safe, 0], centers[cell_safe, 1]

    if mode == "mixture":
        lat, lon = geo.weighted_mean_position(hlat, hlon, p, axis=-1)
    elif mode == "median":
        lat, lon = geo.weighted_geometric_median(hlat, hlon, p)
    else:
        lat, lon = hlat[:, 0], hlon[:, 0]
    radius = (p * geo.haversine_km(hlat, hlon, lat[:, None], lon[:, None]).float()).sum(dim=1)

    # Confidence: joint mass over every cell whose centre lies within confidence_km of the answer.
    joint_all = (pprob[:, :, None] * cprob_all)[:, valid_cell]  # (B, N) in padded (= global id) order
    cell_of = pidx[valid_cell]  # (N,) the global ids in that order
    near = geo.haversine_km(lat[:, None], lon[:, None], centers[cell_of, 0][None], centers[cell_of, 1][None])
    confidence = (joint_all * (near <= confidence_km)).sum(dim=1).clamp(0.0, 1.0)

    nan = torch.full_like(hlat, float("nan"))
    return Prediction(
        lat=lat,
        lon=lon,
        province=pprob.argmax(dim=1),
        province_probs=pprob,
        confidence=confidence,
        radius_km=radius.float(),
        hyp_lat=torch.where(valid, hlat, nan),
        hyp_lon=torch.where(valid, hlon, nan),
        hyp_prob=p,
        hyp_cell=torch.where(valid, cell, torch.full_like(cell, -1)),
    )


def province_logit_adjustment(train_counts: Any, quotas: Any, class_weights: Any) -> np.ndarray:
    """``(7,)`` logit shift from the prior the province head was trained under to the data's prior.

    With balanced batches (``quotas`` per province) and a class-weighted cross-entropy (``class_weights``)
    the head is fitted to the effective prior ``q_p w_p`` (normalised), not to the data's ``n_p``; adding
    ``log(n_p / sum n) - log(q_p w_p / sum q w)`` to its logits (logit adjustment, Menon et al. 2021) makes
    its posteriors those of the data's prior again. Provinces without training images or quota get 0.
    """
    n = np.asarray(train_counts, float)
    eff = np.asarray(quotas, float) * np.asarray(class_weights, float)
    ok = (n > 0) & (eff > 0)
    out = np.zeros(len(n))
    if ok.any():
        out[ok] = np.log(n[ok] / n[ok].sum()) - np.log(eff[ok] / eff[ok].sum())
    return out


def fit_temperatures(
    province_logits: torch.Tensor,
    cell_logits: torch.Tensor,
    province: torch.Tensor,
    local_cell: torch.Tensor,
    iters: int = 100,
) -> tuple[float, float]:
    """Post-hoc temperature scaling (Guo et al. 2017) of the province and the cell probabilities.

    Minimises the negative log-likelihood of held-out data over one temperature for the province head and one
    for the geocell heads (the cell NLL is taken in each sample's true province head), by L-BFGS on log T.
    The mixture's weights p_i = P(province) x P(cell | province) are only as good as these probabilities: a
    model trained with a balanced sampler and smoothed targets is typically under-confident, and its mixture
    then averages distant hypotheses.

    Args:
        province_logits: (B, 7) raw province logits.
        cell_logits: (B, 7, K) raw padded cell logits.
        province: (B,) true province ids.
        local_cell: (B,) index of the true cell within its province's head (-1: no cell; ignored for T_cell).

    Returns:
        (province_temperature, cell_temperature).
    """
    plog = province_logits.detach().float()
    prov = province.long()
    has = local_cell >= 0
    clog = cell_logits.detach().float()[has, prov[has]]  # (B', K) the true province's head
    tgt = local_cell[has].long()

    def fit(logits: torch.Tensor, target: torch.Tensor) -> float:
        if len(target) == 0:
            return 1.0
        log_t = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), target)
            loss.backward()
            return loss

        opt.step(closure)
        return float(log_t.detach().exp().clamp(0.05, 20.0))

    return fit(plog, prov), fit(clog, tgt)


# ------------------------------------------------------------------------------------------ predictor
_CHECKPOINT_FILES = ("model.safetensors", "config.json")


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder for a folder or a file inside it (``model.safetensors``, ``config.json``).

    Raises:
        FileNotFoundError: naming the path and what a checkpoint folder holds.
    """
    p = Path(path).expanduser()
    if p.is_file() and p.name in _CHECKPOINT_FILES:
        p = p.parent
    if p.is_dir() and all((p / f).exists() for f in _CHECKPOINT_FILES):
        return p
    raise FileNotFoundError(
        f"no GEOPAK checkpoint at {path}: expected a folder holding {' and '.join(_CHECKPOINT_FILES)} "
        "(written by `geopak train` / GeopakModel.save_checkpoint)"
    )


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_default(device: torch.device) -> bool:
    """Whether bf16 autocast is used by default on ``device``.

    CUDA: when the GPU supports bf16. CPU: when it has native bf16 instructions (``amx_bf16`` or
    ``avx512_bf16``). Measured with ``benchmarks/bench_predictor.py`` (CLIP ViT-B/16 + ResNet-50, batch 16):
    1.16x faster on a 2-core AVX512-BF16 CPU without AMX; the architecture brief measured 2.1x with AMX
    (4.3 -> 9.0 img/s). CPUs without such instructions would only emulate bf16 and stay in float32.
    ``GEOPAK_BF16=0/1`` overrides.
    """
    env = os.environ.get("GEOPAK_BF16")
    if env is not None and env.strip() != "":
        return env.strip().lower() not in ("0", "false", "no", "off")
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())
    return False


def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _encoder_sizes(model: torch.nn.Module) -> list[int]:
    sizes = []
    for _, m in model.named_modules():
        spec = getattr(m, "spec", None)
        size = getattr(spec, "input_size", None)
        if isinstance(size, int) and hasattr(spec, "kind"):
            sizes.append(size)
    return sizes


def _default_image_size(model: torch.nn.Module) -> int:
    """The training config's image size recorded in the checkpoint, else the larger encoder input size."""
    meta = getattr(model, "checkpoint_meta", None) or {}
    size = (((meta.get("extra") or {}).get("train_config") or {}).get("data") or {}).get("image_size")
    if isinstance(size, int) and size > 0:
        return size
    sizes = _encoder_sizes(model)
    return max(sizes) if sizes else 224


def _is_batch(x: Any) -> bool:
    if isinstance(x, (list, tuple)):
        return True
    return isinstance(x, np.ndarray) and x.ndim == 4


class GeopakPredictor:
    """Predict where in Pakistan photos were taken, from a GEOPAK checkpoint.

    Example (the seed's usage, unchanged)::

        from geopak import GeopakPredictor

        predictor = GeopakPredictor(checkpoint_path="runs/demo/final")
        result = predictor.predict("assets/test_image.jpg")
        print(f"Province: {result['province']}")
        print(f"Location: {result['lat']}, {result['lon']}")
        print(f"Confidence: {result['confidence']:.2f}")

    Args:
        checkpoint_path: a checkpoint folder (``model.safetensors`` + ``config.json``) or a file inside it.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; default: CUDA when available, else CPU.
        batch_size: images encoded per forward pass.
        bf16: bf16 autocast for the encoders; ``None`` = :func:`bf16_default` for the device. The heads and
            the mixture always run in float32.
        top_provinces, top_cells, mode, use_offsets, confidence_km: the :func:`mixture` settings.
        calibrated: use the temperatures fitted on validation data that the checkpoint records
            (``extra.calibration``, written by training); ``False`` = raw probabilities.
        prior: the province prior of the answers. ``"balanced"`` (default): the head as trained, with balanced
            batches and class weights, so no province is favoured for being frequent in the training data (the
            seed's design: its data mix reflects where people post photos, not where a user's photo comes from).
            ``"data"``: shifted to the training data's own province mix (``extra.calibration.province_prior_shift``,
            see :func:`province_logit_adjustment`): more accurate when photos come in that same mix, worse on rare
            provinces.
        image_size: side of the image tensor; default: the training config's ``data.image_size`` recorded in
            the checkpoint, else the larger of the two encoders' input sizes.
        model: an already-built :class:`~geopak.model.geopak.GeopakModel` instead of ``checkpoint_path``.
    """

    def __init__(
        self,
        checkpoint_path: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        bf16: bool | None = None,
        top_provinces: int = 2,
        top_cells: int = 5,
        mode: Literal["mixture", "median", "argmax"] = "mixture",
        use_offsets: bool = True,
        confidence_km: float = DEFAULT_CONFIDENCE_KM,
        image_size: int | None = None,
        model: torch.nn.Module | None = None,
        calibrated: bool = True,
        prior: Literal["balanced", "data"] = "balanced",
    ) -> None:
        if (checkpoint_path is None) == (model is None):
            raise ValueError("give exactly one of checkpoint_path or model")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else _default_device()
        self.checkpoint_path: Path | None = None
        if model is None:
            from geopak.model.geopak import GeopakModel

            self.checkpoint_path = resolve_checkpoint(checkpoint_path)  # type: ignore[arg-type]
            model = GeopakModel.from_checkpoint(self.checkpoint_path)
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.bf16 = bf16_default(self.device) if bf16 is None else bool(bf16)
        self.top_provinces = top_provinces
        self.top_cells = top_cells
        self.mode: Literal["mixture", "median", "argmax"] = mode
        cal = (getattr(self.model, "checkpoint_meta", {}).get("extra") or {}).get("calibration") or {}
        self.province_temperature = float(cal.get("province_temperature", 1.0)) if calibrated else 1.0
        self.cell_temperature = float(cal.get("cell_temperature", 1.0)) if calibrated else 1.0
        if prior not in ("balanced", "data"):
            raise ValueError(f"prior must be 'balanced' or 'data', got {prior!r}")
        self.prior = prior
        self.province_bias: torch.Tensor | None = None
        if prior == "data":
            shift = cal.get("province_prior_shift")
            if shift is None:
                raise ValueError(
                    f"{self.checkpoint_path or 'the model'} records no province prior shift "
                    "(extra.calibration.province_prior_shift, written by `geopak train`); use prior='balanced', "
                    "or recalibrate the checkpoint by rerunning training's last phase"
                )
            self.province_bias = torch.as_tensor(shift, dtype=torch.float32, device=self.device)
        self.use_offsets = use_offsets
        self.confidence_km = confidence_km
        self.image_size = int(image_size or _default_image_size(self.model))
        logger.info(
            "GeopakPredictor: %s on %s, bf16=%s, image size %d",
            self.checkpoint_path or type(model).__name__, self.device, self.bf16, self.image_size,
        )

    @classmethod
    def from_checkpoint(cls, checkpoint_path: str | os.PathLike[str], **kwargs: Any) -> GeopakPredictor:
        """Same as ``GeopakPredictor(checkpoint_path, **kwargs)``."""
        return cls(checkpoint_path=checkpoint_path, **kwargs)

    # ------------------------------------------------------------------ tensors
    def load_images(self, items: Sequence[Any]) -> torch.Tensor:
        """Decode images (threads; decoding releases the GIL) into a ``(B, 3, S, S)`` tensor in [0, 1].

        Raises:
            geopak.data.images.ImageReadError: naming the first input that cannot be read.
        """
        from geopak.data.images import open_image, to_tensor

        def one(x: Any) -> torch.Tensor:
            return to_tensor(open_image(x), self.image_size)

        if len(items) == 0:
            return torch.empty(0, 3, self.image_size, self.image_size)
        if len(items) == 1:
            return one(items[0])[None]
        with ThreadPoolExecutor(max_workers=min(4, len(items), os.cpu_count() or 1)) as pool:
            return torch.stack(list(pool.map(one, items)))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features of a batch (bf16 autocast when enabled), as float32."""
        images = images.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            clip, scene = self.model.encode(images)
        return clip.float(), scene.float()

    @torch.no_grad()
    def predict_features(self, clip: torch.Tensor, scene: torch.Tensor) -> Prediction:
        """Heads + mixture on encoder features (float32)."""
        out = self.model.forward_features(clip.to(self.device).float(), scene.to(self.device).float())
        return mixture(
            self.model, out, self.top_provinces, self.top_cells, self.mode, self.use_offsets, self.confidence_km,
            province_bias=self.province_bias, province_temperature=self.province_temperature,
            cell_temperature=self.cell_temperature,
        )

    @torch.no_grad()
    def predict_tensor(self, images: torch.Tensor) -> Prediction:
        """The :class:`Prediction` of a ``(B, 3, H, W)`` batch in [0, 1] (split into ``batch_size`` chunks)."""
        preds = [self.predict_features(*self.encode(images[i : i + self.batch_size]))
                 for i in range(0, images.shape[0], self.batch_size)]
        return Prediction.cat(preds) if len(preds) != 1 else preds[0]

    def predict_batches(
        self, items: Sequence[Any], progress: Callable[[int], None] | None = None
    ) -> Iterable[tuple[int, Prediction]]:
        """Yield ``(start, Prediction)`` per batch of ``items`` (anything :func:`open_image` reads).

        ``progress(n)`` is called after each batch with the number of images done in it.
        """
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            pred = self.predict_features(*self.encode(self.load_images(chunk))).to("cpu")
            if progress is not None:
                progress(len(chunk))
            yield start, pred

    # ------------------------------------------------------------------ records
    def records(self, pred: Prediction) -> list[dict[str, Any]]:
        """Plain-Python dicts (JSON-ready) of a :class:`Prediction`, one per image."""
        pred = pred.to("cpu")
        cell_prov = torch.as_tensor(self.model.cell_province).cpu().long()
        out = []
        lat, lon = pred.lat.double().tolist(), pred.lon.double().tolist()
        conf, radius = pred.confidence.tolist(), pred.radius_km.tolist()
        prov, pp = pred.province.tolist(), pred.province_probs.tolist()
        hlat, hlon, hp, hc = (pred.hyp_lat.tolist(), pred.hyp_lon.tolist(), pred.hyp_prob.tolist(),
                              pred.hyp_cell.tolist())
        for i in range(len(pred)):
            hyps = [
                {"lat": hlat[i][j], "lon": hlon[i][j], "p": hp[i][j], "cell_id": hc[i][j],
                 "province": PROVINCE_NAMES[int(cell_prov[hc[i][j]])]}
                for j in range(len(hc[i]))
                if hc[i][j] >= 0
            ]
            out.append(
                {
                    "province": PROVINCE_NAMES[prov[i]],
                    "lat": lat[i],
                    "lon": lon[i],
                    "confidence": conf[i],
                    "radius_km": radius[i],
                    "province_probs": dict(zip(PROVINCE_NAMES, pp[i])),
                    "hypotheses": hyps,
                }
            )
        return out

    def predict(self, x: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """Predict one image or a list of images.

        Args:
            x: a path, encoded bytes, a PIL image, a numpy array (``(H, W[, C])``), or a list/tuple of these
                (a 4-D numpy array is a batch).

        Returns:
            For one image a dict: ``province`` (canonical name), ``lat``, ``lon``, ``confidence`` (probability
            within 25 km, see :mod:`geopak.inference`), ``radius_km``, ``province_probs`` (name -> p) and
            ``hypotheses`` (dicts with ``lat``, ``lon``, ``p``, ``cell_id``, ``province``); for a list, a list
            of such dicts in order.

        Raises:
            geopak.data.images.ImageReadError: an input cannot be read (the message names it).
        """
        batch = _is_batch(x)
        items = list(x) if batch else [x]
        recs: list[dict[str, Any]] = []
        for _, pred in self.predict_batches(items):
            recs.extend(self.records(pred))
        return recs if batch else recs[0]
