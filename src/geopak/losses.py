"""GEOPAK training objective: province CE, smoothed geocell KL, haversine offset and auxiliary losses.

All functions are vectorised over the batch (no Python loop over samples) and compute in float32 even
under bf16 autocast. The pieces:

- :func:`province_class_weights`: effective-number class weights ``w_p = (1 - beta) / (1 - beta**n_p)``,
  normalised to mean 1 over the provinces present in the training data (absent provinces get weight 0).
- :func:`province_ce`: weighted cross-entropy ``-w_y log softmax(z)_y``. With ``reduction="weighted_mean"``
  (the default, same as ``torch.nn.functional.cross_entropy(weight=...)``) the batch sum is divided by the
  sum of the batch's weights ``sum_i w_{y_i}``, so the loss keeps the scale of an unweighted CE whatever the
  batch composition; ``reduction="mean"`` divides by the batch size instead (the seed's formula averaged).
- :func:`smoothed_cell_targets`: distance-aware soft labels ``q_i ∝ exp(-d(true, i) / tau_p)`` over the true
  province's cells, built by indexing the precomputed ``(7, K, K)`` distance tensor with the batch.
- :func:`cell_kl_loss`: ``KL(q || softmax(cell_logits[b, province_b]))`` over the true province's head only,
  averaged over the samples that have a cell ("batchmean").
- :func:`haversine_loss`: great-circle error in km divided by a scale (see below), used for the offset head
  (true cell centre moved by the predicted offset of the true cell) and the auxiliary head.
- :class:`GeopakLoss`: the weighted total (0.5 province, 1.0 cell, 1.0 offset, 0.1 aux by default).

Scaling of the km losses. The seed sums raw kilometres with cross-entropies; an auxiliary error of a few
hundred km would then outweigh every classification term by two orders of magnitude and drive the shared
fusion layer. Each km loss is therefore divided by a configurable scale: ``offset_scale_km=10`` (about a
geocell radius: an offset error of one cell radius costs 1, like a CE of 1 nat) and ``aux_scale_km=100``
(about the size of a province-level error). The scale only changes the relative pull of the km terms on the
shared layers (with Adam, a parameter fed by a single loss is insensitive to that loss's scale). The
unscaled mean errors are reported alongside (``offset_km``, ``aux_km``) for logging and monitors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geopak import geo
from geopak.provinces import NUM_PROVINCES, PROVINCES

if TYPE_CHECKING:
    from geopak.geocells import CellTable

__all__ = [
    "DEFAULT_TAU_KM",
    "GeopakLoss",
    "LossWeights",
    "cell_kl_loss",
    "haversine_loss",
    "province_ce",
    "province_class_weights",
    "smoothed_cell_targets",
    "true_cell_offset_positions",
]

logger = logging.getLogger(__name__)

DEFAULT_TAU_KM: tuple[float, ...] = tuple(p.tau_km for p in PROVINCES)
"""Label-smoothing distance scale per province (canonical order), from the design brief."""

PAD_LOGIT = -1e4
"""Logit given to padded cell slots inside the loss (matches the model's padding)."""


# --------------------------------------------------------------------------- province weights / CE
def province_class_weights(counts: Any, beta: float = 0.9995) -> Tensor:
    """Effective-number class weights for the province cross-entropy.

    ``w_p = (1 - beta) / (1 - beta**n_p)`` (Cui et al., 2019), normalised so that the mean over the
    provinces with ``n_p > 0`` is 1. A province with no training images gets weight 0 and does not count
    in the mean. ``beta = 0`` gives uniform weights; ``beta -> 1`` tends to inverse frequency.

    Args:
        counts: ``(7,)`` training images per province (canonical order); list, numpy array or tensor.
        beta: in ``[0, 1)``.

    Returns:
        ``(7,)`` float32 tensor.

    Raises:
        ValueError: wrong length, negative counts, no province with data, or ``beta`` out of range.
    """
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64).reshape(-1), dtype=torch.float64)
    if n.numel() != NUM_PROVINCES:
        raise ValueError(f"counts must have one entry per province ({NUM_PROVINCES}), got {n.numel()}")
    if bool((n < 0).any()) or not bool(torch.isfinite(n).all()):
        raise ValueError(f"province counts must be finite and >= 0, got {n.tolist()}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    present = n > 0
    if not bool(present.any()):
        raise ValueError("all province counts are 0: no training data to weight")
    # 1 - beta**n computed as -expm1(n log beta): exact for beta close to 1 and large n.
    if beta == 0.0:
        w = torch.ones_like(n)
    else:
        w = (1.0 - beta) / (-torch.expm1(n.clamp(min=1.0) * math.log(beta)))
    w = torch.where(present, w, torch.zeros_like(w))
    w = w / w[present].mean()
    return w.float()


def province_ce(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: Literal["weighted_mean", "mean"] = "weighted_mean",
) -> Tensor:
    """Weighted province cross-entropy.

    Args:
        logits: ``(B, 7)`` province logits.
        target: ``(B,)`` province ids.
        weight: ``(7,)`` class weights, or None for unweighted.
        reduction: ``"weighted_mean"`` divides by ``sum_i w_{y_i}`` (as ``F.cross_entropy``);
            ``"mean"`` divides by ``B``.

    Returns:
        Scalar loss (0 for an empty batch).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(1, target.long()[:, None]).squeeze(1)
    if weight is None:
        w = torch.ones_like(nll)
    else:
        w = weight.to(device=nll.device, dtype=nll.dtype)[target.long()]
    if reduction == "weighted_mean":
        denom = w.sum()
    elif reduction == "mean":
        denom = torch.tensor(float(nll.numel()), device=nll.device)
    else:
        raise ValueError(f"unknown reduction {reduction!r}; use 'weighted_mean' or 'mean'")
    return (w * nll).sum() / denom.clamp(min=1e-12)


# --------------------------------------------------------------------------- geocell targets / KL
def smoothed_cell_targets(
    true_local: Tensor,
    province: Tensor,
    padded_distances: Tensor,
    tau_km: Tensor | Sequence[float] | None,
    smoothing: bool = True,
) -> Tensor:
    """Distance-aware soft labels over the true province's cells.

    ``q_i = exp(-d(true, i) / tau_p) / sum_j exp(-d(true, j) / tau_p)`` over the cells ``i`` of the
    province ``p`` of the sample, 0 on padded slots (their distance is ``inf``). Built by indexing the
    precomputed distance tensor: ``padded_distances[province, true_local]``.

    Args:
        true_local: ``(B,)`` local index of the true cell within its province (0..n_p-1).
        province: ``(B,)`` province ids.
        padded_distances: ``(7, K, K)`` km, ``inf`` on padding (``CellTable.padded_distances()``).
        tau_km: ``(7,)`` per-province distance scale; ignored when ``smoothing`` is False.
        smoothing: False gives one-hot targets (the ablation).

    Returns:
        ``(B, K)`` float32, each row summing to 1.
    """
    k = padded_distances.shape[-1]
    true_local = true_local.long()
    if not smoothing:
        return F.one_hot(true_local, k).float()
    if tau_km is None:
        raise ValueError("tau_km is required when smoothing is on")
    tau = torch.as_tensor(tau_km, dtype=torch.float32, device=padded_distances.device)
    d = padded_distances[province.long(), true_local].float()  # (B, K)
    # d(true, true) = 0, so exp(-d/tau) <= 1 with a 1 in every row: no max-subtraction needed. The exponent
    # is floored at -80 (exp = 1.8e-35, still a normal float32: denormals are slow on CPUs), padding
    # (d = inf) is zeroed explicitly.
    w = torch.exp((-d / tau[province.long()][:, None]).clamp(min=-80.0))
    w = torch.where(torch.isfinite(d), w, torch.zeros_like(w))
    return w / w.sum(-1, keepdim=True)


def cell_kl_loss(
    cell_logits: Tensor,
    province: Tensor,
    targets: Tensor,
    valid_slots: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """``KL(q || p)`` with ``p = softmax(cell_logits[b, province_b])``, the true province's head only.

    Args:
        cell_logits: ``(B, 7, K)`` geocell logits (padded slots may hold anything if ``valid_slots`` is given).
        province: ``(B,)`` true province ids.
        targets: ``(B, K)`` target distributions ``q`` (0 on padding).
        valid_slots: optional ``(7, K)`` bool, True where a province has a cell; other slots are forced
            to :data:`PAD_LOGIT` before the softmax.
        mask: optional ``(B,)`` bool, samples to include (e.g. those with a cell).

    Returns:
        Scalar: sum over included samples of the KL, divided by their number ("batchmean"); 0 if none.
    """
    prov = province.long()
    b = torch.arange(cell_logits.shape[0], device=cell_logits.device)
    logits = cell_logits[b, prov].float()  # (B, K)
    if valid_slots is not None:
        logits = logits.masked_fill(~valid_slots[prov], PAD_LOGIT)
    logp = torch.log_softmax(logits, dim=-1)
    q = targets.float()
    kl = (torch.xlogy(q, q) - q * logp).sum(-1)  # (B,)
    return _masked_mean(kl, mask)


# --------------------------------------------------------------------------- km losses
def haversine_loss(
    pred_lat: Tensor,
    pred_lon: Tensor,
    true_lat: Tensor,
    true_lon: Tensor,
    scale_km: float = 1.0,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean great-circle error, in units of ``scale_km``.

    Returns:
        ``(loss, mean_km)``: the scaled mean over included samples (0 if none), and the unscaled mean km
        (detached) for logging.
    """
    d = geo.haversine_km(pred_lat.float(), pred_lon.float(), true_lat.float(), true_lon.float())
    mean_km = _masked_mean(d, mask)
    return mean_km / scale_km, mean_km.detach()


def true_cell_offset_positions(model: Any, fused: Tensor, cell_id: Tensor) -> tuple[Tensor, Tensor]:
    """Positions predicted by the offset head for each sample's TRUE cell: ``(lat (B,), lon (B,))``.

    One batched call to ``model.predict_offset_positions(fused, cell_ids (B, 1))``. Samples without a cell
    (``cell_id == -1``) get cell 0's hypothesis; :class:`GeopakLoss` masks them out.
    """
    ids = cell_id.long().clamp(min=0)[:, None]
    lat, lon = model.predict_offset_positions(fused, ids)
    return lat.reshape(-1), lon.reshape(-1)


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x.mean() if x.numel() else x.sum()
    m = mask.to(x.dtype)
    # Masked samples contribute 0 * x (x is finite), so the graph stays connected when none is valid.
    return (torch.where(mask, x, torch.zeros_like(x))).sum() / m.sum().clamp(min=1.0)


# --------------------------------------------------------------------------- combined loss
@dataclass(frozen=True)
class LossWeights:
    """Weights of the four terms; a term with weight 0 is not computed."""

    province: float = 0.5
    cell: float = 1.0
    offset: float = 1.0
    aux: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"loss weight {f.name} must be a finite number >= 0, got {v!r}")

    @classmethod
    def province_only(cls, province: float = 0.5, aux: float = 0.1) -> LossWeights:
        """Phase 0: province CE and the auxiliary head only."""
        return cls(province=province, cell=0.0, offset=0.0, aux=aux)


class GeopakLoss(nn.Module):
    """The weighted GEOPAK objective.

    ``total = w_prov * CE_prov + w_cell * KL_cell + w_off * hav(offset) / offset_scale_km
    + w_aux * hav(aux) / aux_scale_km``.

    Call it as ``loss_fn(out, targets, offset_positions)`` where ``out`` is a ``GeopakOutput`` (or anything
    with ``province_logits``, ``cell_logits``, ``aux_latlon``), ``targets`` holds ``province (B,) long``,
    ``cell_id (B,) long`` global (-1 where a sample has no cell), ``lat``, ``lon`` (B,) degrees, and
    ``offset_positions = (lat, lon)``, each ``(B,)`` or ``(B, 1)``, is the offset head's position for the
    TRUE cell — get it with :func:`true_cell_offset_positions` (``model.predict_offset_positions(out.fused,
    cell_id[:, None])``). It is needed only when the offset weight is > 0. The loss does not hold the
    model, so it can run on cached features, under DDP or inside any engine.

    Samples with ``cell_id == -1`` (their province has no cells) count only in the province and auxiliary
    terms.

    Returns a dict: ``total`` (with grad) and detached ``province``, ``cell``, ``offset``, ``aux`` (the
    unweighted components that were computed), ``offset_km`` and ``aux_km`` (mean errors in km).

    Args:
        cells: the cell table; may be None only when the cell and offset weights are 0 (phase 0).
        weights: :class:`LossWeights` or a mapping with its fields.
        province_weights: ``(7,)`` CE class weights (e.g. :func:`province_class_weights`); None = uniform.
        province_reduction: see :func:`province_ce`.
        tau_km: ``(7,)`` smoothing scales (default :data:`DEFAULT_TAU_KM`).
        smoothing: False for one-hot cell targets (ablation).
        offset_scale_km: divisor of the offset haversine loss.
        aux_scale_km: divisor of the auxiliary haversine loss.
        check_targets: validate cell ids against the table each call (one host sync per step; turn off
            in tuned GPU runs once the data pipeline is trusted).
    """

    padded_distances: Tensor
    local_index: Tensor
    cell_province: Tensor
    valid_slots: Tensor
    tau_km: Tensor
    province_weights: Tensor

    def __init__(
        self,
        cells: CellTable | None = None,
        weights: LossWeights | Mapping[str, float] | None = None,
        province_weights: Any = None,
        province_reduction: Literal["weighted_mean", "mean"] = "weighted_mean",
        tau_km: Sequence[float] | None = None,
        smoothing: bool = True,
        offset_scale_km: float = 10.0,
        aux_scale_km: float = 100.0,
        check_targets: bool = True,
    ) -> None:
        super().__init__()
        if weights is None:
            weights = LossWeights()
        elif isinstance(weights, Mapping):
            unknown = set(weights) - {f.name for f in fields(LossWeights)}
            if unknown:
                raise ValueError(f"unknown loss weights {sorted(unknown)}; use province, cell, offset, aux")
            weights = LossWeights(**weights)
        self.weights = weights
        if province_reduction not in ("weighted_mean", "mean"):
            raise ValueError(f"unknown province_reduction {province_reduction!r}")
        self.province_reduction = province_reduction
        if not (offset_scale_km > 0 and aux_scale_km > 0):
            raise ValueError(f"km scales must be > 0, got offset {offset_scale_km}, aux {aux_scale_km}")
        self.offset_scale_km = float(offset_scale_km)
        self.aux_scale_km = float(aux_scale_km)
        self.smoothing = bool(smoothing)
        self.check_targets = bool(check_targets)

        tau = torch.as_tensor(DEFAULT_TAU_KM if tau_km is None else tau_km, dtype=torch.float32).reshape(-1)
        if tau.numel() != NUM_PROVINCES or not bool((tau > 0).all()):
            raise ValueError(f"tau_km needs {NUM_PROVINCES} positive values, got {tau.tolist()}")
        self.register_buffer("tau_km", tau, persistent=False)

        if province_weights is None:
            pw = torch.ones(NUM_PROVINCES)
        else:
            pw = torch.as_tensor(np.asarray(province_weights, dtype=np.float32).reshape(-1))
            if pw.numel() != NUM_PROVINCES or bool((pw < 0).any()):
                raise ValueError(f"province_weights needs {NUM_PROVINCES} values >= 0, got {pw.tolist()}")
        self.register_buffer("province_weights", pw.float(), persistent=False)

        needs_cells = weights.cell > 0 or weights.offset > 0
        if cells is None:
            if needs_cells:
                raise ValueError("a CellTable is required when the cell or offset weight is > 0")
            dist = torch.zeros(NUM_PROVINCES, 1, 1)
            local = torch.zeros(1, dtype=torch.long)
            cprov = torch.zeros(1, dtype=torch.long)
            valid = torch.zeros(NUM_PROVINCES, 1, dtype=torch.bool)
            self.n_cells = 0
        else:
            dist = torch.tensor(np.asarray(cells.padded_distances(), dtype=np.float32))
            local = torch.tensor(np.asarray(cells.local_index, dtype=np.int64))
            cprov = torch.tensor(np.asarray(cells.province_ids, dtype=np.int64))
            valid = torch.tensor(cells.padded_index() >= 0)
            self.n_cells = int(cells.n_cells)
        self.register_buffer("padded_distances", dist, persistent=False)
        self.register_buffer("local_index", local, persistent=False)
        self.register_buffer("cell_province", cprov, persistent=False)
        self.register_buffer("valid_slots", valid, persistent=False)

    def extra_repr(self) -> str:
        w = self.weights
        return (
            f"weights=(province={w.province}, cell={w.cell}, offset={w.offset}, aux={w.aux}), "
            f"n_cells={self.n_cells}, smoothing={self.smoothing}, "
            f"offset_scale_km={self.offset_scale_km}, aux_scale_km={self.aux_scale_km}"
        )

    def cell_targets(self, cell_id: Tensor, province: Tensor) -> Tensor:
        """``(B, K)`` soft targets for global ``cell_id`` (samples with -1 get an arbitrary row)."""
        local = self.local_index[cell_id.long().clamp(min=0)]
        return smoothed_cell_targets(local, province, self.padded_distances, self.tau_km, self.smoothing)

    def _check_cells(self, cell_id: Tensor, province: Tensor) -> Tensor:
        has = cell_id >= 0
        safe = cell_id.clamp(0, max(self.n_cells - 1, 0))
        out_of_range = cell_id >= self.n_cells
        mismatch = has & ~out_of_range & (self.cell_province[safe] != province)
        if bool((out_of_range | mismatch).any()):  # the only host sync of the loss
            if bool(out_of_range.any()):
                raise ValueError(
                    f"cell_id {int(cell_id.max())} out of range for a table of {self.n_cells} cells; "
                    "assign cells with the same cell table"
                )
            i = int(torch.nonzero(mismatch)[0])
            raise ValueError(
                f"batch sample {i}: cell {int(cell_id[i])} belongs to province "
                f"{int(self.cell_province[cell_id[i]])}, not to the sample's province {int(province[i])}; "
                "assign cells with the same cell table"
            )
        return has

    def forward(
        self,
        out: Any,
        targets: Mapping[str, Tensor],
        offset_positions: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        w = self.weights
        province = targets["province"].long()
        lat, lon = targets["lat"], targets["lon"]
        ref = out.province_logits
        total = ref.new_zeros((), dtype=torch.float32)
        logs: dict[str, Tensor] = {}

        if w.province > 0:
            lp = province_ce(out.province_logits, province, self.province_weights, self.province_reduction)
            total = total + w.province * lp
            logs["province"] = lp.detach()

        if w.cell > 0 or w.offset > 0:
            cell_id = targets["cell_id"].long()
            has = self._check_cells(cell_id, province) if self.check_targets else cell_id >= 0
            if w.cell > 0:
                q = self.cell_targets(cell_id, province)
                lc = cell_kl_loss(out.cell_logits, province, q, self.valid_slots, mask=has)
                total = total + w.cell * lc
                logs["cell"] = lc.detach()
            if w.offset > 0:
                if offset_positions is None:
                    raise ValueError(
                        "offset weight > 0 needs offset_positions: pass "
                        "geopak.losses.true_cell_offset_positions(model, out.fused, targets['cell_id'])"
                    )
                plat, plon = (t.reshape(-1) for t in offset_positions)
                lo, km = haversine_loss(plat, plon, lat, lon, self.offset_scale_km, mask=has)
                total = total + w.offset * lo
                logs["offset"] = lo.detach()
                logs["offset_km"] = km

        if w.aux > 0:
            la, km = haversine_loss(out.aux_latlon[:, 0], out.aux_latlon[:, 1], lat, lon, self.aux_scale_km)
            total = total + w.aux * la
            logs["aux"] = la.detach()
            logs["aux_km"] = km

        return {"total": total, **logs}
