"""Building blocks of the GEOPAK network: projections, gated fusion, the province-gated geocell heads,
the offset head and the auxiliary head.

Shapes use B images, H hypotheses per image, D the fused width (512 by default), N cells, K the widest
province's cell count.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from geopak.provinces import NUM_PROVINCES

__all__ = [
    "PAD_LOGIT",
    "AuxHead",
    "CellHeads",
    "GatedFusion",
    "OffsetHead",
    "Projection",
    "mlp_head",
]

PAD_LOGIT = -1.0e4
"""Logit written where a province has fewer than K cells: exp() underflows to 0, and it survives bf16/fp16."""


class Projection(nn.Sequential):
    """Linear -> LayerNorm -> GELU, mapping an encoder's features to the fused width."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.GELU())


def mlp_head(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> LayerNorm -> GELU -> Dropout -> Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.LayerNorm(hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, out_dim),
    )


class GatedFusion(nn.Module):
    """E = alpha * E_scene + (1 - alpha) * E_clip with alpha = sigmoid(Linear([E_clip, E_scene])) per image.

    With ``mode="mean"`` the gate is fixed at 0.5 (a plain average; the ablation without the gate).
    """

    def __init__(self, dim: int, mode: str = "gate") -> None:
        super().__init__()
        if mode not in ("gate", "mean"):
            raise ValueError(f"fusion must be 'gate' or 'mean', got {mode!r}")
        self.mode = mode
        self.gate = nn.Linear(2 * dim, 1) if mode == "gate" else None

    def forward(self, e_clip: torch.Tensor, e_scene: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse two (B, D) projections; returns (fused (B, D), alpha (B,) = weight of the scene features)."""
        if self.gate is None:
            alpha = torch.full(e_clip.shape[:1], 0.5, dtype=e_clip.dtype, device=e_clip.device)
        else:
            alpha = torch.sigmoid(self.gate(torch.cat([e_clip, e_scene], dim=-1))).squeeze(-1)
        a = alpha.unsqueeze(-1)
        return a * e_scene + (1.0 - a) * e_clip, alpha


class CellHeads(nn.Module):
    """One geocell classifier per province (mixture-of-experts style), run for every image at once.

    Province p's head is Linear(D, hidden) -> LayerNorm -> GELU -> Dropout -> Linear(hidden, n_p), with its own
    parameters. The heads are evaluated together, without a loop over provinces or images: the first layers of all
    heads are one (D -> A x hidden) matrix product (A = provinces with cells), the per-head LayerNorms one normalisation
    with per-head affine parameters, the last layers one product per head on its slice of one weight matrix, and the
    results one scatter into the padded output. The output is one padded (B, 7, K) tensor whose row p holds province p's logits at
    local indices 0..n_p-1 and :data:`PAD_LOGIT` beyond. A province without cells has no head; its row is padding.

    Parameters (exactly those of the separate heads): ``w1 (A, hidden, D)``, ``b1``, ``ln_weight``, ``ln_bias``
    ``(A, hidden)``; ``w2 (N, hidden)`` and ``b2 (N,)`` with the rows of province p's cells at its offset. Checkpoints
    written with one ``heads.{p}`` module per province load unchanged (converted on load).
    """

    def __init__(self, dim: int, hidden: int, counts: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        if len(counts) != NUM_PROVINCES:
            raise ValueError(f"expected {NUM_PROVINCES} per-province cell counts, got {len(counts)}")
        self.counts = [int(c) for c in counts]
        self.k = max(max(self.counts), 1)
        self.hidden = int(hidden)
        active = [p for p, n in enumerate(self.counts) if n > 0]
        a, n_cells = len(active), sum(self.counts)
        self.w1 = nn.Parameter(torch.empty(a, hidden, dim))
        self.b1 = nn.Parameter(torch.empty(a, hidden))
        self.ln_weight = nn.Parameter(torch.ones(a, hidden))
        self.ln_bias = nn.Parameter(torch.zeros(a, hidden))
        self.w2 = nn.Parameter(torch.empty(n_cells, hidden))
        self.b2 = nn.Parameter(torch.empty(n_cells))
        self.drop = nn.Dropout(dropout)
        offsets = [0]
        for n in self.counts:
            offsets.append(offsets[-1] + n)
        valid = torch.zeros(a, self.k, dtype=torch.bool)  # (A, K): real cells of each head
        for i, p in enumerate(active):
            valid[i, : self.counts[p]] = True
        self.register_buffer("active", torch.tensor(active, dtype=torch.long), persistent=False)
        self.register_buffer("_flat_index", valid.flatten().nonzero()[:, 0], persistent=False)
        self._offsets = offsets
        self._spans = [(offsets[p], offsets[p + 1]) for p in active]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's default initialisation, head by head (uniform within 1/sqrt(fan_in))."""
        b1, b2 = self.w1.shape[-1] ** -0.5, self.hidden**-0.5
        with torch.no_grad():
            for w, bound in ((self.w1, b1), (self.b1, b1), (self.w2, b2), (self.b2, b2)):
                w.uniform_(-bound, bound)
            self.ln_weight.fill_(1.0)
            self.ln_bias.zero_()

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 7, K) padded float32 logits."""
        b, a = fused.shape[0], self.w1.shape[0]
        h = (fused @ self.w1.flatten(0, 1).T.to(fused.dtype)).view(b, a, self.hidden) + self.b1.to(fused.dtype)
        h = nn.functional.layer_norm(h, (self.hidden,)) * self.ln_weight + self.ln_bias
        h = self.drop(nn.functional.gelu(h))
        # last layers: one product per head on its own rows of w2 (a padded batched product over K = the
        # largest head would multiply mostly padding when the cell counts are as uneven as Sindh's 450 vs AJK's 5)
        parts = [h[:, i] @ self.w2[lo:hi].T.to(h.dtype) for i, (lo, hi) in enumerate(self._spans)]
        # float32 whatever the autocast dtype: exact padding value, softmax without bf16 rounding
        flat = torch.cat(parts, dim=1).float() + self.b2.float()  # (B, N) in cell order
        out = flat.new_full((b, a * self.k), PAD_LOGIT)
        out[:, self._flat_index] = flat
        out = out.view(b, a, self.k)
        if a == NUM_PROVINCES:
            return out
        logits = out.new_full((b, NUM_PROVINCES, self.k), PAD_LOGIT)
        logits[:, self.active] = out
        return logits

    def head_logits(self, province: int, fused: torch.Tensor) -> torch.Tensor:
        """Province ``province``'s head alone on ``fused (B, D)``: ``(B, n_p)`` (a slow, readable reference)."""
        i = int((self.active == province).nonzero()[0, 0])
        lo, hi = self._offsets[province], self._offsets[province + 1]
        h = nn.functional.linear(fused, self.w1[i], self.b1[i])
        h = nn.functional.gelu(nn.functional.layer_norm(h, (self.hidden,), self.ln_weight[i], self.ln_bias[i]))
        return nn.functional.linear(self.drop(h), self.w2[lo:hi], self.b2[lo:hi])

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        """Accept checkpoints with one ``heads.{p}`` Sequential per province (the earlier layout)."""
        old = f"{prefix}heads."
        if any(k.startswith(old) for k in state_dict):
            active = self.active.tolist()
            parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("w1", "b1", "ln_weight", "ln_bias", "w2", "b2")}
            for p in active:
                q = f"{old}{p}."
                for name, key in (("w1", "0.weight"), ("b1", "0.bias"), ("ln_weight", "1.weight"),
                                  ("ln_bias", "1.bias"), ("w2", "4.weight"), ("b2", "4.bias")):
                    parts[name].append(state_dict.pop(q + key))
            for name, ts in parts.items():
                state_dict[prefix + name] = torch.cat(ts) if name in ("w2", "b2") else torch.stack(ts)
            for k in [k for k in state_dict if k.startswith(old)]:
                state_dict.pop(k)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class _ResidualBlock(nn.Module):
    """x + Linear(GELU(Linear(LayerNorm(x))))."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


class OffsetHead(nn.Module):
    """Residual MLP predicting a local offset from a cell centre, in **kilometres** (north, east).

    Input: the fused vector (D), the cell embedding and the province embedding, concatenated. The first layer
    is one linear map of that concatenation, computed as the sum of its three column blocks so the image part
    is evaluated once per image and broadcast over the H hypotheses. Output: ``tanh(raw) * clamp_km`` per
    hypothesis (float32), so an offset never leaves its cell's clamp radius. The last layer starts at zero (offsets
    start at the cell centres).
    """

    def __init__(
        self, dim: int, cell_dim: int, province_dim: int, hidden: int, blocks: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.in_fused = nn.Linear(dim, hidden)
        self.in_cell = nn.Linear(cell_dim, hidden, bias=False)
        self.in_province = nn.Linear(province_dim, hidden, bias=False)
        self.blocks = nn.Sequential(*[_ResidualBlock(hidden, dropout) for _ in range(blocks)])
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, fused: torch.Tensor, cell_emb: torch.Tensor, province_emb: torch.Tensor, clamp_km: torch.Tensor
    ) -> torch.Tensor:
        """Offsets for every hypothesis.

        Args:
            fused: (B, D).
            cell_emb: (B, H, Ec) embeddings of the hypothesised cells.
            province_emb: (B, H, Ep) embeddings of their provinces.
            clamp_km: (B, H) clamp radius of each cell in km.

        Returns:
            (B, H, 2) offsets (north_km, east_km), each in [-clamp_km, clamp_km].
        """
        h = self.in_fused(fused).unsqueeze(1) + self.in_cell(cell_emb) + self.in_province(province_emb)
        raw = self.out(self.norm(self.blocks(h))).float()  # km: keep full precision under autocast
        return torch.tanh(raw) * clamp_km.unsqueeze(-1).float()


class AuxHead(nn.Module):
    """Linear(D, hidden) -> GELU -> Linear(hidden, 2): (lat, lon) in degrees as ``centre + scale * raw``.

    The centre and scale (about Pakistan's centre and half-extent) make a zero output a sensible guess and keep
    the regression targets of order one. Used as a training regulariser only. Output is float32.
    """

    def __init__(
        self, dim: int, hidden: int, center: tuple[float, float], scale: tuple[float, float]
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 2))
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32), persistent=False)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 2) degrees."""
        raw = self.net(fused).float()  # degrees: bf16 would round 30.4 to a multiple of 0.125
        return self.center + self.scale * raw
