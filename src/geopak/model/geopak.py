"""The GEOPAK network: two encoders, gated fusion, province head, province-gated geocell heads, offsets.

::

    images [0,1] --clip encoder--> (B,Dc) --Linear,LN,GELU--> E_clip (B,D) --+
                 --scene encoder-> (B,Ds) --Linear,LN,GELU--> E_scene (B,D) -+-- gate alpha (B,) --> fused (B,D)
    fused -> province head (B,7) | 7 geocell heads -> padded (B,7,K) | aux head (B,2) degrees
    (fused, cell ids (B,H)) -> offset head [fused + cell emb + province emb] -> (B,H,2) km, tanh-clamped

:meth:`GeopakModel.encode` is the only part that touches the encoders (a feature cache stores exactly its
outputs); :meth:`GeopakModel.forward_features` runs everything after them. Offsets are in **kilometres**
(north, east) in the local tangent plane at the cell centre, and become positions through
:func:`geopak.geo.apply_offset_km`.

A checkpoint is a directory: ``model.safetensors`` (weights), ``config.json`` (the :class:`GeopakConfig`, the
encoder specs with their preprocessing, the province list, the cell table and its hash, the training phase,
the package version and free-form ``extra``) and ``cells.parquet``. :meth:`GeopakModel.from_checkpoint`
rebuilds the model from that directory alone, without pickle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from geopak import __version__, geo
from geopak.geocells import CellTable
from geopak.model.encoders import Encoder, EncoderSpec, create_encoder
from geopak.model.heads import PAD_LOGIT, AuxHead, CellHeads, GatedFusion, OffsetHead, Projection, mlp_head
from geopak.provinces import NUM_PROVINCES, PROVINCE_NAMES, PROVINCES

__all__ = [
    "CHECKPOINT_FORMAT",
    "PAD_LOGIT",
    "PARAM_GROUPS",
    "REFERENCE_CELL_COUNTS",
    "CheckpointError",
    "GeopakConfig",
    "GeopakModel",
    "GeopakOutput",
    "synthetic_cell_table",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "geopak-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PARAM_GROUPS = ("clip", "scene", "fusion", "heads", "embeddings")

REFERENCE_CELL_COUNTS = (450, 139, 50, 19, 30, 6, 5)
"""Cells per province (canonical order) of the published reference run: 699 in all."""


class CheckpointError(ValueError):
    """A checkpoint directory that is incomplete, malformed, or does not match what it is loaded with."""


@dataclass
class GeopakConfig:
    """Architecture of a :class:`GeopakModel` (defaults from the design brief).

    Attributes:
        clip_encoder: registered name of the semantic encoder.
        scene_encoder: registered name of the scene encoder.
        fusion_dim: width D of the projections and the fused vector.
        fusion: ``"gate"`` (learned per-image gate) or ``"mean"`` (plain average, gate fixed at 0.5).
        province_hidden: hidden width of the province head (D -> hidden -> 7).
        cell_hidden: hidden width of each province's geocell head (D -> hidden -> n_p).
        province_emb_dim: province embedding width (7 x this).
        cell_emb_dim: cell embedding width (N x this).
        offset_hidden: width of the offset head's residual MLP.
        offset_blocks: residual blocks in the offset head.
        aux_hidden: hidden width of the auxiliary (lat, lon) head.
        aux_center: (lat, lon) the auxiliary head's zero output maps to (about Pakistan's centre).
        aux_scale: (lat, lon) degrees per unit of the auxiliary head's raw output.
        dropout: dropout inside the heads.
    """

    clip_encoder: str = "clip_vit_b16"
    scene_encoder: str = "resnet50_places365"
    fusion_dim: int = 512
    fusion: str = "gate"
    province_hidden: int = 256
    cell_hidden: int = 512
    province_emb_dim: int = 32
    cell_emb_dim: int = 96
    offset_hidden: int = 256
    offset_blocks: int = 2
    aux_hidden: int = 256
    aux_center: tuple[float, float] = (30.4, 69.4)
    aux_scale: tuple[float, float] = (6.5, 8.5)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.aux_center = (float(self.aux_center[0]), float(self.aux_center[1]))
        self.aux_scale = (float(self.aux_scale[0]), float(self.aux_scale[1]))
        if self.fusion not in ("gate", "mean"):
            raise ValueError(f"GeopakConfig.fusion must be 'gate' or 'mean', got {self.fusion!r}")
        for f in (
            "fusion_dim",
            "province_hidden",
            "cell_hidden",
            "province_emb_dim",
            "cell_emb_dim",
            "offset_hidden",
            "aux_hidden",
        ):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"GeopakConfig.{f} must be a positive integer, got {getattr(self, f)!r}")
        if self.offset_blocks < 0:
            raise ValueError(f"GeopakConfig.offset_blocks must be >= 0, got {self.offset_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GeopakConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["aux_center"] = list(self.aux_center)
        d["aux_scale"] = list(self.aux_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeopakConfig:
        """Build from a dict, rejecting unknown keys (a typo would otherwise be silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GeopakConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def tiny(cls, **overrides: Any) -> GeopakConfig:
        """Test-size configuration (``test_vit`` + ``test_resnet``, width 32): builds and runs in milliseconds."""
        base: dict[str, Any] = dict(
            clip_encoder="test_vit",
            scene_encoder="test_resnet",
            fusion_dim=32,
            province_hidden=32,
            cell_hidden=32,
            province_emb_dim=8,
            cell_emb_dim=16,
            offset_hidden=32,
            offset_blocks=1,
            aux_hidden=32,
            dropout=0.0,
        )
        base.update(overrides)
        return cls(**base)


@dataclass
class GeopakOutput:
    """Structured output of :meth:`GeopakModel.forward_features` (all tensors, batch first).

    Attributes:
        province_logits: (B, 7) float32, in canonical province order.
        cell_logits: (B, 7, K) float32 per-province geocell logits at local indices; :data:`PAD_LOGIT` (-1e4)
            where a province has fewer than K cells.
        aux_latlon: (B, 2) auxiliary (lat, lon) prediction in degrees (float32).
        gate: (B,) weight alpha of the scene features in the fusion (0.5 when ``fusion="mean"``).
        fused: (B, D) fused embedding (feeds the offset head), in the compute dtype (bf16 under autocast).

    Logits and coordinates are float32 even under bf16 autocast.
    """

    province_logits: torch.Tensor
    cell_logits: torch.Tensor
    aux_latlon: torch.Tensor
    gate: torch.Tensor
    fused: torch.Tensor


class GeopakModel(nn.Module):
    """Dual-encoder gated-fusion geolocation network, sized by a cell table.

    Args:
        config: the architecture.
        cells: the geocell table (fixes the number of cells per province and the offset clamps).
        clip_encoder: a pre-built semantic encoder (e.g. with pretrained weights) instead of a random one.
        scene_encoder: a pre-built scene encoder instead of a random one.

    Attributes:
        clip, scene: the :class:`~geopak.model.encoders.Encoder` modules.
        clip_proj, scene_proj, fusion: projections to D and the gate (parameter group ``fusion``).
        province_head, cell_heads, offset_head, aux_head: the heads (group ``heads``).
        province_embedding (7, Ep), cell_embedding (N, Ec): the embeddings (group ``embeddings``).
        padded_index (7, K) int64, cell_centers (N, 2) float64 degrees, clamp_km (N,) float32,
        cell_province (N,) int64: buffers derived from the cell table (not stored in the weights file).
    """

    def __init__(
        self,
        config: GeopakConfig,
        cells: CellTable,
        *,
        clip_encoder: Encoder | None = None,
        scene_encoder: Encoder | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.cells = cells
        self.clip = clip_encoder if clip_encoder is not None else create_encoder(config.clip_encoder)
        self.scene = scene_encoder if scene_encoder is not None else create_encoder(config.scene_encoder)
        for enc, want, role in (
            (self.clip, config.clip_encoder, "clip"),
            (self.scene, config.scene_encoder, "scene"),
        ):
            if enc.spec.name != want:
                raise ValueError(f"{role} encoder is {enc.spec.name!r} but the config names {want!r}")
        d = config.fusion_dim
        self.clip_proj = Projection(self.clip.feature_dim, d)
        self.scene_proj = Projection(self.scene.feature_dim, d)
        self.fusion = GatedFusion(d, config.fusion)
        self.province_head = mlp_head(d, config.province_hidden, NUM_PROVINCES, config.dropout)
        self.cell_heads = CellHeads(d, config.cell_hidden, cells.counts_per_province.tolist(), config.dropout)
        self.province_embedding = nn.Embedding(NUM_PROVINCES, config.province_emb_dim)
        self.cell_embedding = nn.Embedding(cells.n_cells, config.cell_emb_dim)
        nn.init.normal_(self.province_embedding.weight, std=0.02)
        nn.init.normal_(self.cell_embedding.weight, std=0.02)
        self.offset_head = OffsetHead(
            d,
            config.cell_emb_dim,
            config.province_emb_dim,
            config.offset_hidden,
            config.offset_blocks,
            config.dropout,
        )
        self.aux_head = AuxHead(d, config.aux_hidden, config.aux_center, config.aux_scale)
        self.checkpoint_meta: dict[str, Any] = {}
        """``phase``, ``geopak_version`` and ``extra`` of the checkpoint this model was loaded from (else empty)."""
        self.register_buffer("padded_index", torch.from_numpy(cells.padded_index()), persistent=False)
        self.register_buffer(
            "cell_centers", torch.from_numpy(cells.centers.astype(np.float64)), persistent=False
        )
        self.register_buffer(
            "clamp_km", torch.from_numpy(cells.clamp_km.astype(np.float32)), persistent=False
        )
        self.register_buffer(
            "cell_province", torch.from_numpy(cells.province_ids.astype(np.int64)), persistent=False
        )

    @classmethod
    def create(
        cls,
        config: GeopakConfig,
        cells: CellTable,
        *,
        clip_weights: str | Path | bool | None = None,
        scene_weights: str | Path | bool | None = None,
        allow_download: bool = True,
    ) -> GeopakModel:
        """Build a model whose encoders start from pretrained weights.

        Args:
            config: the architecture.
            cells: the cell table.
            clip_weights, scene_weights: as ``weights`` of :func:`~geopak.model.encoders.create_encoder`:
                ``None`` (random), ``"pretrained"`` (cache, else download) or a file path.
            allow_download: whether ``"pretrained"`` may download a file missing from the cache.
        """
        return cls(
            config,
            cells,
            clip_encoder=create_encoder(config.clip_encoder, clip_weights, allow_download=allow_download),
            scene_encoder=create_encoder(config.scene_encoder, scene_weights, allow_download=allow_download),
        )

    # ---------------------------------------------------------------------------------------- shapes
    @property
    def n_cells(self) -> int:
        return self.cells.n_cells

    @property
    def max_cells(self) -> int:
        """K, the padded width of ``cell_logits``."""
        return int(self.padded_index.shape[1])

    # --------------------------------------------------------------------------------------- forward
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run both encoders on [0, 1] images (B, 3, H, W); returns (clip_feat (B, Dc), scene_feat (B, Ds)).

        An encoder whose parameters are all frozen runs without building a graph.
        """
        return self._run(self.clip, images), self._run(self.scene, images)

    @staticmethod
    def _run(enc: Encoder, images: torch.Tensor) -> torch.Tensor:
        if images.requires_grad or any(p.requires_grad for p in enc.parameters()):
            return enc(images)
        with torch.no_grad():
            return enc(images)

    def forward_features(self, clip_feat: torch.Tensor, scene_feat: torch.Tensor) -> GeopakOutput:
        """Everything after the encoders, from their features (e.g. read from a feature cache).

        Args:
            clip_feat: (B, Dc) semantic encoder features.
            scene_feat: (B, Ds) scene encoder features.
        """
        if clip_feat.ndim != 2 or clip_feat.shape[1] != self.clip.feature_dim:
            raise ValueError(f"clip_feat must be (B, {self.clip.feature_dim}), got {tuple(clip_feat.shape)}")
        if scene_feat.ndim != 2 or scene_feat.shape[1] != self.scene.feature_dim:
            raise ValueError(
                f"scene_feat must be (B, {self.scene.feature_dim}), got {tuple(scene_feat.shape)}"
            )
        if clip_feat.shape[0] != scene_feat.shape[0]:
            raise ValueError(f"batch sizes differ: clip {clip_feat.shape[0]}, scene {scene_feat.shape[0]}")
        fused, gate = self.fusion(self.clip_proj(clip_feat), self.scene_proj(scene_feat))
        return GeopakOutput(
            province_logits=self.province_head(fused).float(),
            cell_logits=self.cell_heads(fused),
            aux_latlon=self.aux_head(fused),
            gate=gate,
            fused=fused,
        )

    def forward(self, images: torch.Tensor) -> GeopakOutput:
        """``forward_features(*encode(images))``; images are (B, 3, H, W) float in [0, 1]."""
        return self.forward_features(*self.encode(images))

    def offsets(self, fused: torch.Tensor, cell_ids: torch.Tensor) -> torch.Tensor:
        """Local offsets (north_km, east_km) for any number of hypothesised cells per image, in one call.

        Args:
            fused: (B, D) fused embeddings (``GeopakOutput.fused``).
            cell_ids: (B, H) or (B,) global cell ids.

        Returns:
            (B, H, 2) float32 km (or (B, 2) for 1-D ``cell_ids``), each component within
            ``[-clamp_km[cell], clamp_km[cell]]``.
        """
        squeeze = cell_ids.ndim == 1
        ids = cell_ids.unsqueeze(1) if squeeze else cell_ids
        if ids.ndim != 2 or ids.shape[0] != fused.shape[0]:
            raise ValueError(
                f"cell_ids must be (B, H) with B = {fused.shape[0]}, got {tuple(cell_ids.shape)}"
            )
        ids = ids.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.n_cells):
            raise ValueError(
                f"cell ids must be in 0..{self.n_cells - 1}, got range {int(ids.min())}..{int(ids.max())}"
            )
        out = self.offset_head(
            fused,
            self.cell_embedding(ids),
            self.province_embedding(self.cell_province[ids]),
            self.clamp_km[ids],
        )
        return out.squeeze(1) if squeeze else out

    def predict_offset_positions(
        self, fused: torch.Tensor, cell_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell centres moved by the predicted offsets: (lat (B, H), lon (B, H)) float64 degrees."""
        off = self.offsets(fused, cell_ids).double()
        ids = cell_ids.long()
        c = self.cell_centers[ids]
        return geo.apply_offset_km(c[..., 0], c[..., 1], off[..., 0], off[..., 1])

    # -------------------------------------------------------------------------------------- freezing
    def freeze_encoders(self) -> None:
        """Freeze both encoders wholly (their batch norms then stay in eval mode during training)."""
        self.unfreeze_top(0.0, 0.0)

    def unfreeze_top(self, clip_fraction: float, scene_fraction: float) -> None:
        """Make exactly the top fraction of each encoder trainable (the rest frozen).

        ViT: the top ``ceil(f x blocks)`` blocks and the final norm (0.3 of 12 = blocks 8-11 + norm);
        ResNet: stages from layer4 down (0.2 -> layer4). 0 freezes an encoder, 1 unfreezes it wholly.
        """
        n_clip = self.clip.set_trainable(clip_fraction)
        n_scene = self.scene.set_trainable(scene_fraction)
        self.train(self.training)  # re-apply Encoder.train's rule: frozen batch norms stay in eval mode
        logger.info("trainable encoder parameters: clip %d, scene %d", n_clip, n_scene)

    def _group_modules(self) -> dict[str, list[nn.Module]]:
        return {
            "clip": [self.clip],
            "scene": [self.scene],
            "fusion": [self.clip_proj, self.scene_proj, self.fusion],
            "heads": [self.province_head, self.cell_heads, self.offset_head, self.aux_head],
            "embeddings": [self.province_embedding, self.cell_embedding],
        }

    def param_groups(self, lrs: dict[str, float]) -> list[dict[str, Any]]:
        """Optimizer parameter groups with per-group learning rates; frozen parameters are left out.

        Args:
            lrs: learning rate per group name (``clip``, ``scene``, ``fusion``, ``heads``, ``embeddings``);
                ``default`` applies to any group not named.

        Returns:
            A list of ``{"name", "params", "lr"}`` dicts (only groups with trainable parameters).

        Raises:
            ValueError: an unknown group name, or a group with trainable parameters and no learning rate.
        """
        unknown = sorted(set(lrs) - set(PARAM_GROUPS) - {"default"})
        if unknown:
            raise ValueError(f"unknown parameter groups {unknown}; known: {list(PARAM_GROUPS)} (+ 'default')")
        groups = []
        for name, mods in self._group_modules().items():
            params = [p for m in mods for p in m.parameters() if p.requires_grad]
            if not params:
                continue
            lr = lrs.get(name, lrs.get("default"))
            if lr is None:
                raise ValueError(
                    f"parameter group {name!r} has {sum(p.numel() for p in params)} trainable parameters but no "
                    f"learning rate; give lrs[{name!r}] or lrs['default'], or freeze it"
                )
            groups.append({"name": name, "params": params, "lr": float(lr)})
        return groups

    def param_counts(self, trainable_only: bool = False) -> dict[str, int]:
        """Parameter counts per module: clip, scene, fusion, province_head, cell_heads, offset_head, aux_head,
        heads (the four heads), embeddings, total."""

        def count(mods: list[nn.Module]) -> int:
            return sum(
                p.numel() for m in mods for p in m.parameters() if p.requires_grad or not trainable_only
            )

        g = self._group_modules()
        out = {name: count(mods) for name, mods in g.items()}
        for name in ("province_head", "cell_heads", "offset_head", "aux_head"):
            out[name] = count([getattr(self, name)])
        out["total"] = sum(out[k] for k in PARAM_GROUPS)
        return out

    # ----------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(
        self, path: str | Path, phase: int | str | None = None, extra: dict[str, Any] | None = None
    ) -> Path:
        """Write a self-describing checkpoint directory.

        Args:
            path: directory (created); ``model.safetensors``, ``config.json`` and the cell table go inside.
            phase: training phase that produced it (recorded only).
            extra: any JSON-serialisable information (metrics, train config, ...).

        Returns:
            The directory.
        """
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "geopak_version": __version__,
            "phase": phase,
            "config": self.config.to_dict(),
            "encoders": {"clip": self.clip.spec.to_dict(), "scene": self.scene.spec.to_dict()},
            "provinces": list(PROVINCE_NAMES),
            "cell_table_hash": self.cells.content_hash,
            "cells": self.cells.to_dict(),
            "extra": extra or {},
        }
        try:
            text = json.dumps(meta, indent=1, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint metadata (phase/extra) is not JSON-serialisable: {e}") from e
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        # each file is written under a temporary name and renamed, config.json last: an interrupted save never
        # leaves a config.json beside weights that do not belong to it
        (out / CONFIG_FILE).unlink(missing_ok=True)
        tmp = out / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT, "geopak": __version__})
        tmp.replace(out / WEIGHTS_FILE)
        self.cells.save(out)
        tmp = out / (CONFIG_FILE + ".tmp")
        tmp.write_text(text)
        tmp.replace(out / CONFIG_FILE)
        logger.info("checkpoint written to %s (%d tensors)", out, len(state))
        return out

    @staticmethod
    def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
        """The parsed ``config.json`` of a checkpoint directory, validated for format and province list."""
        d = Path(path)
        cfg_path = d / CONFIG_FILE
        if not d.is_dir() or not cfg_path.is_file() or not (d / WEIGHTS_FILE).is_file():
            raise CheckpointError(
                f"{d} is not a GEOPAK checkpoint: expected a directory with {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
        try:
            meta = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from e
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{cfg_path}: format is {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
            )
        if int(meta.get("format_version", 0)) > CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"{cfg_path}: format version {meta['format_version']} is newer than this geopak "
                f"({__version__}) reads ({CHECKPOINT_FORMAT_VERSION}); upgrade geopak"
            )
        if list(meta.get("provinces", [])) != list(PROVINCE_NAMES):
            raise CheckpointError(
                f"{cfg_path}: province list {meta.get('provinces')} differs from this geopak's {list(PROVINCE_NAMES)}"
            )
        for key in ("config", "encoders", "cells", "cell_table_hash"):
            if key not in meta:
                raise CheckpointError(f"{cfg_path}: missing {key!r}")
        return meta

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, cells: CellTable | None = None, map_location: str | torch.device = "cpu"
    ) -> GeopakModel:
        """Rebuild a model from a checkpoint directory alone (no pickle, no download).

        Args:
            path: the directory written by :meth:`save_checkpoint`.
            cells: optionally, the cell table the caller intends to use; it must be the checkpoint's (same hash).
            map_location: device for the weights.

        Raises:
            CheckpointError: missing files, malformed config, mismatched cell table or weights.
        """
        from safetensors.torch import load_file

        d = Path(path)
        meta = cls.read_checkpoint_config(d)
        stored_hash = meta["cell_table_hash"]
        try:
            table = CellTable.from_dict(meta["cells"])
        except ValueError as e:
            raise CheckpointError(f"{d / CONFIG_FILE}: invalid cell table: {e}") from e
        if table.content_hash != stored_hash:
            raise CheckpointError(
                f"{d / CONFIG_FILE}: the stored cell table does not match its recorded hash"
            )
        if (d / "cells.parquet").is_file():  # full float64 precision (the JSON copy keeps 10 digits)
            exact = CellTable.load(d / "cells.parquet")
            if exact.content_hash == stored_hash:
                table = exact
            else:
                logger.warning(
                    "%s does not match the checkpoint's cell table; using the copy in %s",
                    d / "cells.parquet",
                    CONFIG_FILE,
                )
        if cells is not None and cells.content_hash != stored_hash:
            raise CheckpointError(
                f"cell table mismatch: checkpoint {d} was trained with cell table {stored_hash[:12]} "
                f"({table.n_cells} cells) but the given table is {cells.content_hash[:12]} ({cells.n_cells} cells); "
                "use the checkpoint's own table (omit `cells`, or load cells.parquet from the checkpoint directory)"
            )
        try:
            config = GeopakConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{d / CONFIG_FILE}: invalid model config: {e}") from e
        specs = {role: EncoderSpec.from_dict(meta["encoders"][role]) for role in ("clip", "scene")}
        model = cls(
            config,
            table,
            clip_encoder=create_encoder(specs["clip"]),
            scene_encoder=create_encoder(specs["scene"]),
        )
        state = load_file(str(d / WEIGHTS_FILE), device=str(map_location))
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise CheckpointError(
                f"{d / WEIGHTS_FILE} does not fit the model described by {CONFIG_FILE}: {e}"
            ) from e
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{d / WEIGHTS_FILE} does not fit the model described by {CONFIG_FILE}: "
                f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
        model.to(map_location)
        model.checkpoint_meta = {k: meta.get(k) for k in ("phase", "geopak_version", "extra")}
        logger.info("loaded checkpoint %s (phase %s, %d cells)", d, meta.get("phase"), table.n_cells)
        return model


def synthetic_cell_table(
    n_cells: int = sum(REFERENCE_CELL_COUNTS),
    counts: list[int] | tuple[int, ...] | None = None,
    seed: int = 0,
) -> CellTable:
    """A plausible cell table without data: ``n_cells`` spread over the provinces in the reference run's
    proportions (699 cells: Sindh 450, Punjab 139, ...), every province getting at least one cell when
    ``n_cells >= 7``. Centres are scattered (seeded) around each province's rough centre, radii 3-50 km.

    Used to size the model (``geopak model describe``), in benchmarks and in tests.

    Args:
        n_cells: total number of cells (ignored when ``counts`` is given).
        counts: explicit per-province counts (7 values, canonical order).
        seed: random seed of the centres and radii.
    """
    if counts is None:
        if n_cells < 1:
            raise ValueError(f"n_cells must be >= 1, got {n_cells}")
        w = np.asarray(REFERENCE_CELL_COUNTS, float)
        share = w / w.sum() * n_cells
        alloc = np.floor(share).astype(int)
        rest = n_cells - int(alloc.sum())
        alloc[np.argsort(-(share - alloc), kind="stable")[:rest]] += 1
        while n_cells >= NUM_PROVINCES and (alloc == 0).any():  # every province gets a cell
            alloc[int(np.argmax(alloc))] -= 1
            alloc[int(np.argmin(alloc))] += 1
        counts = alloc.tolist()
    counts = [int(c) for c in counts]
    if len(counts) != NUM_PROVINCES or min(counts) < 0 or sum(counts) < 1:
        raise ValueError(f"counts must be 7 non-negative integers with a positive sum, got {counts}")
    centres = {  # rough (lat, lon) centre and spread in degrees of each province's populated area
        0: (25.9, 68.6, 1.2),
        1: (31.0, 72.7, 1.5),
        2: (34.4, 71.9, 0.9),
        3: (33.68, 73.05, 0.08),
        4: (35.8, 74.6, 0.9),
        5: (28.8, 66.0, 1.8),
        6: (33.9, 73.8, 0.4),
    }
    rng = np.random.default_rng(seed)
    rows = []
    cid = 0
    for p, n in enumerate(counts):
        lat0, lon0, s = centres[p]
        for _ in range(n):
            rows.append(
                dict(
                    cell_id=cid,
                    province=PROVINCES[p].name,
                    center_lat=lat0 + s * rng.uniform(-1, 1),
                    center_lon=lon0 + s * rng.uniform(-1, 1),
                    radius_km=float(rng.uniform(3.0, 50.0)),
                    count=int(rng.integers(40, 400)),
                    urban=bool(rng.random() < 0.5),
                )
            )
            cid += 1
    return CellTable(pd.DataFrame(rows))
