"""Province-balanced batch sampling.

Each batch holds a fixed number of images per province (default per batch of 64: Sindh 16, each other
province 8, from :attr:`geopak.provinces.Province.batch_quota`), whatever the dataset's imbalance.

How the indices are drawn. Every province has its own *stream*: an endless concatenation of passes, each a
fresh seeded permutation of that province's samples. Epoch ``e`` takes the next ``num_batches x quota``
positions of the stream, so a province is read without repetition within a pass and every one of its
samples is seen exactly once per pass, also across epoch boundaries. A province whose samples run out at
least one batch before the end of an epoch (a *rare* one) is oversampled: with ``replacement=True`` (default)
each epoch holds one full pass over it plus the surplus drawn uniformly with replacement, shuffled together
(every sample seen at least once per epoch); with ``replacement=False`` it cycles through passes (each sample
seen the same number of times, +-1). Everything is a function of ``(seed, epoch)``: call :meth:`set_epoch`.

Distributed training: all ranks generate the same global epoch of ``num_batches x world_size`` batches and
rank ``r`` keeps batches ``r, r + world_size, ...``. Ranks therefore see disjoint samples of every
abundant province within a pass, and their union is exactly the single-process epoch. With Lightning, pass
``rank``/``world_size`` yourself and set ``use_distributed_sampler=False``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from geopak.provinces import NUM_PROVINCES, PROVINCES, normalize_province

__all__ = ["DEFAULT_QUOTAS", "ProvinceBalancedBatchSampler", "scale_quotas"]

logger = logging.getLogger(__name__)

DEFAULT_QUOTAS: tuple[int, ...] = tuple(p.batch_quota for p in PROVINCES)
"""Images per province in a batch of ``sum(DEFAULT_QUOTAS)`` (64)."""

_MIX = 0x9E3779B9  # arbitrary constants separating the seed sub-streams
_IID = 0x5EED1


def _province_ids(provinces: Any) -> np.ndarray:
    arr = np.asarray(provinces)
    if arr.ndim != 1:
        raise ValueError(f"provinces must be a 1-D sequence, got shape {arr.shape}")
    if arr.dtype.kind in "OUS":
        uniq, inv = np.unique(arr.astype(str), return_inverse=True)
        ids = np.array([normalize_province(u).id for u in uniq], dtype=np.int64)
        return ids[inv]
    if arr.dtype.kind not in "iu":
        raise ValueError(f"provinces must be integer ids (0-6) or names, got dtype {arr.dtype}")
    ids = arr.astype(np.int64)
    bad = np.flatnonzero((ids < 0) | (ids >= NUM_PROVINCES))
    if len(bad):
        raise ValueError(f"province id {ids[bad[0]]} at position {bad[0]} is outside 0..{NUM_PROVINCES - 1}")
    return ids


def _quota_vector(quotas: Sequence[int] | Mapping[str, int] | None) -> np.ndarray:
    if quotas is None:
        return np.array(DEFAULT_QUOTAS, dtype=np.int64)
    if isinstance(quotas, Mapping):
        q = np.zeros(NUM_PROVINCES, dtype=np.int64)
        for name, v in quotas.items():
            q[normalize_province(name).id] = int(v)
    else:
        q = np.asarray(list(quotas), dtype=np.int64)
        if q.shape != (NUM_PROVINCES,):
            raise ValueError(f"quotas must have {NUM_PROVINCES} entries (canonical order), got {len(q)}")
    if (q < 0).any():
        raise ValueError(f"quotas must be >= 0, got {q.tolist()}")
    return q


def scale_quotas(
    quotas: Sequence[int] | np.ndarray, batch_size: int, present: np.ndarray | None = None
) -> np.ndarray:
    """Rescale per-province quotas to ``batch_size``, giving absent provinces' share to the present ones.

    The share of the provinces with data is kept proportional to their quotas; rounding uses the largest
    remainder method, so the result sums exactly to ``batch_size``.

    Args:
        quotas: ``(7,)`` non-negative weights (e.g. the per-64 quotas).
        batch_size: the total to reach.
        present: ``(7,)`` bool, provinces that have samples (default: all).

    Raises:
        ValueError: when no present province has a positive quota.
    """
    q = np.asarray(quotas, dtype=np.float64).copy()
    if present is not None:
        q[~np.asarray(present, bool)] = 0.0
    total = q.sum()
    if total <= 0:
        raise ValueError(
            "no province with samples has a positive quota; check the quotas and the provinces of the data"
        )
    exact = q * batch_size / total
    out = np.floor(exact).astype(np.int64)
    rest = batch_size - int(out.sum())
    if rest:
        order = np.lexsort((np.arange(len(q)), -(exact - out)))  # largest remainder, ties by province order
        out[order[:rest]] += 1
    return out


class ProvinceBalancedBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices with a fixed number of images per province.

    Args:
        provinces: ``(N,)`` province of each dataset row (ids 0-6 or names/aliases).
        quotas: per-province images per batch: 7 numbers in canonical order or a ``{name: n}`` mapping
            (missing names get 0). Default: the design's 16 Sindh + 8 each other per 64. They are rescaled
            to ``batch_size`` and the quotas of provinces absent from ``provinces`` are redistributed.
        batch_size: indices per batch (per rank).
        num_batches: batches per epoch per rank. None: ``ceil(N / (batch_size x world_size))``, an epoch as
            long as the dataset; ``"cover"``: the fewest batches in which every sample of every province
            is drawn at least once.
        seed: base seed; the draws depend only on ``(seed, epoch)``.
        replacement: rare provinces (fewer samples than draws per epoch): one pass plus a surplus drawn with
            replacement (True) or cycling through reshuffled passes (False).
        rank, world_size: position of this process in distributed training.
        shuffle_within_batch: shuffle the order inside a batch (otherwise grouped by province).
    """

    def __init__(
        self,
        provinces: Any,
        quotas: Sequence[int] | Mapping[str, int] | None = None,
        batch_size: int = 64,
        num_batches: int | str | None = None,
        seed: int = 0,
        replacement: bool = True,
        rank: int = 0,
        world_size: int = 1,
        shuffle_within_batch: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        ids = _province_ids(provinces)
        if len(ids) == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.province_of = ids
        self.counts = np.bincount(ids, minlength=NUM_PROVINCES).astype(np.int64)
        self.members: list[np.ndarray] = [np.flatnonzero(ids == p) for p in range(NUM_PROVINCES)]
        base = _quota_vector(quotas)
        present = self.counts > 0
        self.quotas = scale_quotas(base, batch_size, present)
        starved = [PROVINCES[p].name for p in range(NUM_PROVINCES) if present[p] and self.quotas[p] == 0]
        if starved:
            logger.warning("provinces with data but a quota of 0 per batch of %d: %s", batch_size, starved)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.replacement = bool(replacement)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle_within_batch = bool(shuffle_within_batch)
        self.epoch = 0
        if num_batches is None:
            nb = math.ceil(len(ids) / (batch_size * world_size))
        elif num_batches == "cover":
            with_q = self.quotas > 0
            nb = math.ceil(
                max(math.ceil(self.counts[p] / self.quotas[p]) for p in np.flatnonzero(with_q)) / world_size
            )
        elif isinstance(num_batches, (int, np.integer)) and num_batches >= 1:
            nb = int(num_batches)
        else:
            raise ValueError(f"num_batches must be a positive int, None or 'cover', got {num_batches!r}")
        self.num_batches = int(nb)
        # Rare: the province runs out of samples at least one batch before the end of the epoch. (A province
        # short by less than one batch, e.g. the one that sets num_batches="cover", stays on its stream.)
        draws = self.quotas * self.num_batches * self.world_size
        self.rare = present & (self.counts + self.quotas * self.world_size <= draws)
        logger.debug(
            "balanced sampler: quotas %s, %d batches/epoch/rank, rare provinces %s",
            self.quotas.tolist(),
            self.num_batches,
            [PROVINCES[p].short for p in np.flatnonzero(self.rare)],
        )

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches :meth:`__iter__` yields (deterministic per ``(seed, epoch)``)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ draws
    def _stream(self, p: int, start: int, stop: int) -> np.ndarray:
        """Positions ``[start, stop)`` of province ``p``'s endless stream of seeded permutations."""
        members = self.members[p]
        n = len(members)
        parts = []
        for k in range(start // n, (stop - 1) // n + 1):
            perm = np.random.default_rng([self.seed, _MIX, p, k]).permutation(n)
            lo = max(start - k * n, 0)
            hi = min(stop - k * n, n)
            parts.append(perm[lo:hi])
        return members[np.concatenate(parts)]

    def global_epoch(self, epoch: int | None = None) -> np.ndarray:
        """All ranks' batches of an epoch, ``(num_batches x world_size, batch_size)`` dataset indices."""
        e = self.epoch if epoch is None else int(epoch)
        nb = self.num_batches * self.world_size
        cols = []
        for p in range(NUM_PROVINCES):
            q = int(self.quotas[p])
            if q == 0:
                continue
            m = nb * q
            if self.rare[p] and self.replacement:
                # one full pass (every sample once) + the surplus drawn with replacement, shuffled together
                rng = np.random.default_rng([self.seed, _IID, p, e])
                n = int(self.counts[p])
                pick = np.concatenate([np.arange(n), rng.integers(0, n, size=m - n)])
                idx = self.members[p][rng.permutation(pick)]
            else:
                idx = self._stream(p, e * m, (e + 1) * m)
            cols.append(idx.reshape(nb, q))
        batches = np.concatenate(cols, axis=1)
        if self.shuffle_within_batch:
            batches = np.random.default_rng([self.seed, e]).permuted(batches, axis=1)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_epoch()[self.rank :: self.world_size]
        for row in batches:
            yield row.tolist()

    def state_dict(self) -> dict[str, int]:
        """What is needed to resume: the epoch (the rest is a function of the constructor arguments)."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Restore :meth:`state_dict`."""
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))
