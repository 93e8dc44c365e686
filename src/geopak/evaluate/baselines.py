"""Baselines and retrieval refinement over cached encoder features (plain torch/numpy, seeded, CPU-fast).

Every baseline sees exactly what GEOPAK sees: the frozen-encoder features ``clip (N, Dc)`` and
``scene (N, Ds)`` of the same images (or, for k-NN, the trained model's fused embedding), the training
split's positions and the checkpoint's geocells.

- :func:`prior_predict`: the training set's geometric median for every image (the best constant under mean
  error).
- :func:`knn_predict`: k-nearest training images by cosine similarity, then the densest neighbour cluster
  (mode-seeking: the neighbour with the most similarity mass within ``mode_km``, averaged with the
  neighbours around it), so two modes are not averaged into a point between them.
- :func:`train_flat_cells`: a flat geocell classifier over *all* cells (no province hierarchy), an MLP on the
  standardised concatenated features, cross-entropy; predicts its argmax cell's centre.
- :func:`train_regression`: an MLP regressing (lat, lon) directly, trained with the haversine loss.
- :func:`refine_with_retrieval`: moves each mixture hypothesis toward the positions of its nearest training
  images *within the hypothesis's cell* (PIGEON-style retrieval refinement).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from geopak import geo

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureSet",
    "MLPPredictor",
    "knn_predict",
    "nearest_cell_province",
    "prior_predict",
    "refine_with_retrieval",
    "train_flat_cells",
    "train_regression",
]


@dataclass
class FeatureSet:
    """Cached features and labels of one split."""

    clip: np.ndarray
    """(N, Dc) float32."""
    scene: np.ndarray
    """(N, Ds) float32."""
    lat: np.ndarray
    lon: np.ndarray
    province: np.ndarray
    """(N,) canonical ids."""
    cell_id: np.ndarray | None = None
    """(N,) global cell ids (training split), -1 where unassigned."""

    def __len__(self) -> int:
        return len(self.lat)

    def concat(self) -> np.ndarray:
        """(N, Dc + Ds) concatenated features."""
        return np.concatenate([self.clip, self.scene], axis=1).astype(np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# ------------------------------------------------------------------------------------------ prior
def prior_predict(train_lat: np.ndarray, train_lon: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The training geometric median, repeated ``n`` times."""
    la, lo = geo.geometric_median(train_lat, train_lon)
    return np.full(n, la), np.full(n, lo)


def nearest_cell_province(lat: np.ndarray, lon: np.ndarray, centers: np.ndarray, cell_province: np.ndarray,
                          chunk: int = 4096) -> np.ndarray:
    """Province id of the nearest cell centre to each point: the province answer of position-only methods."""
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    out = np.empty(len(lat), dtype=np.int64)
    for s in range(0, len(lat), chunk):
        d = geo.haversine_km(lat[s:s + chunk, None], lon[s:s + chunk, None], centers[None, :, 0], centers[None, :, 1])
        out[s:s + chunk] = np.asarray(cell_province)[np.argmin(d, axis=1)]
    return out


# ------------------------------------------------------------------------------------------ k-NN
def _topk_sim(query: np.ndarray, index: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine similarities (values, indices) of each query row among the index rows (numpy)."""
    q, x = _normalise(query), _normalise(index)
    k = min(k, len(x))
    vals = np.empty((len(q), k), np.float32)
    idx = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), chunk):
        sim = q[s:s + chunk] @ x.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        pv = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-pv, axis=1, kind="stable")
        idx[s:s + chunk] = np.take_along_axis(part, order, axis=1)
        vals[s:s + chunk] = np.take_along_axis(pv, order, axis=1)
    return vals, idx


def knn_predict(
    train_emb: np.ndarray,
    train_lat: np.ndarray,
    train_lon: np.ndarray,
    query_emb: np.ndarray,
    k: int = 10,
    temperature: float = 0.05,
    mode_km: float = 25.0,
    train_province: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """k-NN retrieval: ``(lat, lon, province or None)`` for each query embedding.

    Neighbour weights are ``softmax(similarity / temperature)``. The answer is the weighted spherical mean of
    the neighbours within ``mode_km`` of the neighbour that has the most weight within ``mode_km`` of it;
    its province is that neighbour's.
    """
    if len(train_emb) == 0:
        raise ValueError("k-NN needs at least one training embedding")
    sim, idx = _topk_sim(query_emb, train_emb, k)
    w = np.exp((sim - sim[:, :1]) / temperature)
    w /= w.sum(axis=1, keepdims=True)
    nl, no = np.asarray(train_lat, float)[idx], np.asarray(train_lon, float)[idx]  # (B, k)
    d = geo.haversine_km(nl[:, :, None], no[:, :, None], nl[:, None, :], no[:, None, :])  # (B, k, k)
    near = d <= mode_km
    score = (near * w[:, None, :]).sum(axis=2)  # mass around each neighbour
    best = np.argmax(score, axis=1)
    member = near[np.arange(len(best)), best] * w  # (B, k)
    lat, lon = geo.weighted_mean_position(nl, no, member, axis=-1)
    prov = None if train_province is None else np.asarray(train_province)[idx[np.arange(len(best)), best]]
    return np.asarray(lat), np.asarray(lon), prov


# ------------------------------------------------------------------------------------------ MLPs
class MLPPredictor(nn.Module):
    """Standardise -> Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, out_dim: int, hidden: int = 512, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.net = nn.Sequential(
            nn.Linear(len(mean), hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _fit(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: Any,
    targets: tuple[torch.Tensor, ...],
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> float:
    """Seeded AdamW training loop over in-memory tensors; returns the final epoch's mean loss."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = x.shape[0]
    steps = epochs * max(1, -(-n // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    last = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        total, count = 0.0, 0
        for s in range(0, n, batch_size):
            b = perm[s:s + batch_size]
            loss = loss_fn(model(x[b]), *(t[b] for t in targets))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            count += len(b)
        last = total / max(count, 1)
    model.eval()
    return last


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)


def train_flat_cells(
    train: FeatureSet, n_cells: int, epochs: int = 30, batch_size: int = 256, lr: float = 2e-3, seed: int = 0,
    hidden: int = 512,
) -> MLPPredictor:
    """A flat classifier over all ``n_cells`` cells (no province level), trained with cross-entropy.

    Training rows without a cell (``cell_id < 0``) are skipped.
    """
    if train.cell_id is None:
        raise ValueError("train_flat_cells needs the training split's cell_id")
    keep = np.asarray(train.cell_id) >= 0
    if not keep.any():
        raise ValueError("no training row has a geocell; cannot train the flat cell classifier")
    torch.manual_seed(seed)
    x = train.concat()[keep]
    model = MLPPredictor(*_stats(x), out_dim=n_cells, hidden=hidden)
    t0 = time.perf_counter()
    loss = _fit(model, torch.from_numpy(x), nn.functional.cross_entropy,
                (torch.tensor(np.asarray(train.cell_id)[keep], dtype=torch.long),), epochs, batch_size, lr, seed)
    logger.info("flat_cells: %d rows, %d cells, final CE %.3f, %.1f s", len(x), n_cells, loss,
                time.perf_counter() - t0)
    return model


def train_regression(
    train: FeatureSet, epochs: int = 30, batch_size: int = 256, lr: float = 2e-3, seed: int = 0, hidden: int = 512
) -> MLPPredictor:
    """Direct (lat, lon) regression trained with the mean haversine distance (km).

    The net predicts a (north, east) displacement from the training geometric median, about 100 km per unit
    and bounded by a tanh at :data:`REGRESSION_MAX_KM`, so it starts at the prior and stays well-scaled.
    """
    torch.manual_seed(seed)
    x = train.concat()
    model = MLPPredictor(*_stats(x), out_dim=2, hidden=hidden)
    la0, lo0 = geo.geometric_median(train.lat, train.lon)
    model.register_buffer("origin", torch.tensor([la0, lo0], dtype=torch.float32))
    nn.init.zeros_(model.net[-1].weight)
    nn.init.zeros_(model.net[-1].bias)

    def loss_fn(out: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
        pla, plo = _regression_positions(model, out)
        return geo.haversine_km(pla, plo, lat, lon).mean()

    t0 = time.perf_counter()
    loss = _fit(model, torch.from_numpy(x), loss_fn,
                (torch.tensor(np.asarray(train.lat), dtype=torch.float32), torch.tensor(np.asarray(train.lon), dtype=torch.float32)),
                epochs, batch_size, lr, seed)
    logger.info("regression: %d rows, final mean haversine %.1f km, %.1f s", len(x), loss, time.perf_counter() - t0)
    return model


REGRESSION_MAX_KM = 2000.0
"""Bound of the regression's displacement from the prior (tanh), larger than Pakistan's extent."""


def _regression_positions(model: MLPPredictor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    o = model.origin  # type: ignore[attr-defined]
    disp = REGRESSION_MAX_KM * torch.tanh(out * (100.0 / REGRESSION_MAX_KM))  # ~100 km per unit near zero
    return geo.apply_offset_km(o[0].expand(out.shape[0]), o[1].expand(out.shape[0]), disp[:, 0], disp[:, 1])


@torch.no_grad()
def predict_flat_cells(model: MLPPredictor, feats: FeatureSet, centers: np.ndarray,
                       cell_province: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat, lon, province) of the argmax cell's centre."""
    best = model(torch.from_numpy(feats.concat())).argmax(dim=1).numpy()
    return centers[best, 0], centers[best, 1], np.asarray(cell_province)[best]


@torch.no_grad()
def predict_regression(model: MLPPredictor, feats: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of the regression MLP."""
    la, lo = _regression_positions(model, model(torch.from_numpy(feats.concat())))
    return la.double().numpy(), lo.double().numpy()


__all__ += ["predict_flat_cells", "predict_regression"]


# ------------------------------------------------------------------------------------------ retrieval
def refine_with_retrieval(
    hyp_lat: np.ndarray,
    hyp_lon: np.ndarray,
    hyp_cell: np.ndarray,
    hyp_prob: np.ndarray,
    query_emb: np.ndarray,
    train_emb: np.ndarray,
    train_lat: np.ndarray,
    train_lon: np.ndarray,
    train_cell: np.ndarray,
    k: int = 5,
    alpha: float = 0.5,
    temperature: float = 0.05,
    chunk_elems: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PIGEON-style refinement: pull each hypothesis toward its cell's most similar training images.

    For hypothesis h of image b (cell c) the ``k`` training images of cell c most similar to image b
    (cosine on ``query_emb`` / ``train_emb``) give a similarity-weighted spherical mean position m; the
    hypothesis moves to the spherical mean of (hypothesis, m) with weights (1 - alpha, alpha). Hypotheses
    whose cell has no training image, and empty slots (``hyp_cell < 0``), are unchanged. Then the final
    position is the p-weighted spherical mean again. Fully vectorised: one similarity matrix per chunk of
    images and one masked top-k over (image, hypothesis, training image).

    Returns:
        ``(lat, lon, refined_hyp_lat, refined_hyp_lon)``.
    """
    hl, ho = np.asarray(hyp_lat, float), np.asarray(hyp_lon, float)
    hc, hp = np.asarray(hyp_cell, np.int64), np.asarray(hyp_prob, float)
    b, h = hc.shape
    q, x = _normalise(query_emb), _normalise(train_emb)
    tc = np.asarray(train_cell, np.int64)
    tl, to = np.asarray(train_lat, float), np.asarray(train_lon, float)
    n = len(x)
    rl, ro = hl.copy(), ho.copy()
    if n == 0:
        return (*geo.weighted_mean_position(np.nan_to_num(hl), np.nan_to_num(ho), hp), rl, ro)
    kk = min(k, n)
    step = max(1, chunk_elems // max(1, h * n))
    for s in range(0, b, step):
        sim = q[s:s + step] @ x.T  # (b', n)
        same = tc[None, None, :] == hc[s:s + step, :, None]  # (b', h, n)
        masked = np.where(same, sim[:, None, :], -np.inf)
        part = np.argpartition(-masked, kk - 1, axis=2)[:, :, :kk]  # (b', h, kk)
        v = np.take_along_axis(masked, part, axis=2)
        ok = np.isfinite(v)
        top = np.where(ok, v, -np.inf).max(axis=2, keepdims=True)
        w = np.where(ok, np.exp((v - np.where(np.isfinite(top), top, 0.0)) / temperature), 0.0)
        has = w.sum(axis=2) > 0  # (b', h)
        ml, mo = geo.weighted_mean_position(tl[part], to[part], np.where(has[..., None], w, 1.0), axis=-1)
        pair_lat = np.stack([hl[s:s + step], ml], axis=-1)
        pair_lon = np.stack([ho[s:s + step], mo], axis=-1)
        nl, no = geo.weighted_mean_position(np.nan_to_num(pair_lat), np.nan_to_num(pair_lon),
                                            np.array([1.0 - alpha, alpha]), axis=-1)
        upd = has & (hc[s:s + step] >= 0)
        rl[s:s + step] = np.where(upd, nl, hl[s:s + step])
        ro[s:s + step] = np.where(upd, no, ho[s:s + step])
    lat, lon = geo.weighted_mean_position(np.nan_to_num(rl), np.nan_to_num(ro), hp, axis=-1)
    return np.asarray(lat), np.asarray(lon), rl, ro


