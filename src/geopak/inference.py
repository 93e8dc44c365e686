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
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

from geopak import geo

logger = logging.getLogger(__name__)

__all__ = ["Prediction", "mixture", "DEFAULT_CONFIDENCE_KM"]

DEFAULT_CONFIDENCE_KM = 25.0
"""Radius of the ``confidence`` mass (km)."""


@dataclass
class Prediction:
    """Batched mixture output (tensors, float32 unless noted); see the module docstring for definitions."""

    lat: torch.Tensor
    """(B,) degrees."""
    lon: torch.Tensor
    """(B,) degrees."""
    province: torch.Tensor
    """(B,) int64 argmax province id."""
    province_probs: torch.Tensor
    """(B, 7)."""
    confidence: torch.Tensor
    """(B,) probability mass within ``confidence_km`` of (lat, lon)."""
    radius_km: torch.Tensor
    """(B,) p-weighted mean distance of the hypotheses to (lat, lon)."""
    hyp_lat: torch.Tensor
    """(B, H)."""
    hyp_lon: torch.Tensor
    """(B, H)."""
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
    mode: Literal["mixture", "argmax"] = "mixture",
    use_offsets: bool = True,
    confidence_km: float = DEFAULT_CONFIDENCE_KM,
) -> Prediction:
    """The mixture of hypotheses for a batch of model outputs.

    Args:
        model: a :class:`geopak.model.geopak.GeopakModel` (or anything with its ``padded_index (7,K)``,
            ``cell_centers (N,2)`` buffers and ``predict_offset_positions(fused, cell_ids)``).
        out: the model's :class:`~geopak.model.geopak.GeopakOutput` for the batch (``province_logits``,
            ``cell_logits``, ``fused``).
        top_provinces: provinces kept per image (capped at the number of provinces with cells).
        top_cells: cells kept per chosen province (capped at K).
        mode: ``"mixture"`` (p-weighted spherical mean) or ``"argmax"`` (the first hypothesis).
        use_offsets: add the offset head's refinement to each cell centre; ``False`` = bare centres.
        confidence_km: radius of the confidence mass.

    Returns:
        A :class:`Prediction` with H = top_provinces x top_cells hypotheses (after capping).
    """
    if mode not in ("mixture", "argmax"):
        raise ValueError(f"mode must be 'mixture' or 'argmax', got {mode!r}")
    if top_provinces < 1 or top_cells < 1:
        raise ValueError(f"top_provinces and top_cells must be >= 1, got {top_provinces}, {top_cells}")
    plog = out.province_logits.float()
    device = plog.device
    b = plog.shape[0]
    pidx = _as_long(model.padded_index, device)  # (7, K)
    centers = torch.as_tensor(model.cell_centers, device=device).float()  # (N, 2)
    n_prov, k = pidx.shape
    valid_cell = pidx >= 0  # (7, K)
    has_cells = valid_cell.any(dim=1)  # (7,)
    if not bool(has_cells.any()):
        raise ValueError("the model's cell table has no cells")

    pprob = torch.softmax(plog.masked_fill(~has_cells, float("-inf")), dim=1)  # (B, 7)
    kp = min(int(top_provinces), int(has_cells.sum()))
    kc = min(int(top_cells), k)
    top_pp, top_pi = pprob.topk(kp, dim=1)  # (B, kp)

    clog = out.cell_logits.float().masked_fill(~valid_cell, float("-inf"))  # (B, 7, K)
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
        hlat, hlon = hlat.float(), hlon.float()
    else:
        hlat, hlon = centers[cell_safe, 0], centers[cell_safe, 1]

    if mode == "mixture":
        lat, lon = geo.weighted_mean_position(hlat, hlon, p, axis=-1)
    else:
        lat, lon = hlat[:, 0], hlon[:, 0]
    lat, lon = lat.float(), lon.float()
    radius = (p * geo.haversine_km(hlat, hlon, lat[:, None], lon[:, None])).sum(dim=1)

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
