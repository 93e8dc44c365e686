"""Building blocks of the GEOPAK network: projections, gated fusion, the province-gated geocell heads,
the offset head and the auxiliary head.

Shapes use B images, H hypotheses per image, D the fused width (512 by default), N cells, K the widest
province's cell count.
"""

from __future__ import annotations

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

    Each head is Linear(D, hidden) -> LayerNorm -> GELU -> Linear(hidden, n_p). The seven heads are applied to
    the whole batch (a loop over provinces, never over images) and scattered into one padded (B, 7, K) tensor
    whose row p holds province p's logits at local indices 0..n_p-1 and :data:`PAD_LOGIT` beyond.
    A province without cells has no head; its row is all padding.
    """

    def __init__(self, dim: int, hidden: int, counts: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        if len(counts) != NUM_PROVINCES:
            raise ValueError(f"expected {NUM_PROVINCES} per-province cell counts, got {len(counts)}")
        self.counts = [int(c) for c in counts]
        self.k = max(max(self.counts), 1)
        self.heads = nn.ModuleDict(
            {str(p): mlp_head(dim, hidden, n, dropout) for p, n in enumerate(self.counts) if n > 0}
        )

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 7, K) padded float32 logits."""
        outs = {int(p): head(fused) for p, head in self.heads.items()}
        # float32 whatever the autocast dtype: exact padding value, softmax without bf16 rounding
        logits = fused.new_full((fused.shape[0], NUM_PROVINCES, self.k), PAD_LOGIT, dtype=torch.float32)
        for p, o in outs.items():
            logits[:, p, : o.shape[-1]] = o.float()
        return logits


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
