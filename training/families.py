"""Model families of the pretraining loop: what differs between GRAM and CAT.

:mod:`training.pretrain` is one loop for every family (data, scenes, features and crops,
AdamW, DDP, checkpoints, logging); ``model.variant`` picks the family through hear_gram's
registry. A family builds the pretraining model (its ``encoder`` is what export writes),
computes a micro-batch's loss, runs what follows each optimiser step, names the per-clip
vectors the data readers must deliver, and loads pretrained weights before a run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from hear_gram.checkpoint import load_encoder, load_state_strict
from hear_gram.features import FEATURE_CHANNELS
from hear_gram.variants import get_variant
from training import mae
from training.cat import CatPretrainer
from training.config import Config
from training.data import Unit, first_stored_target
from training.masking import random_masking
from training.rr_targets import BESIDE, HearTargets, parse_spec

RR_CACHE = "rr_cache"


class GramFamily:
    """GRAM-T and GRAM-M: the masked autoencoder of :mod:`training.mae`, random patch
    masking drawn from the loop's generator."""

    target_suffix: str | None = None

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def encoder_args(self) -> dict:
        return mae.encoder_args(self.cfg.model, self.cfg.mamba)

    def build(self, device: torch.device, out: Path, units: list[Unit]) -> nn.Module:
        return mae.build_model(self.cfg.model, self.cfg.mamba).to(device)

    def init_from(self, model: nn.Module, ref: str) -> str:
        return mae.init_from(model, ref, self.cfg.model.variant)

    def loss(
        self, model: nn.Module, bare: nn.Module, x: Tensor, batch: dict, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        keep, masked = random_masking(
            x.shape[0], bare.encoder.num_patches, self.cfg.model.mask_ratio, generator, x.device
        )
        return model(x, keep, masked), {}

    def after_step(self, bare: nn.Module, step: int) -> None:
        """Nothing follows a GRAM optimiser step."""


class CatFamily:
    """CAT: student, EMA teacher and CNN decoder (:mod:`training.cat`), with the
    representation-regularization targets of ``cat.rr_targets`` when set."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        rr = cfg.cat.rr_targets
        self.spec = parse_spec(rr) if rr else None
        stored = self.spec is not None and self.spec.kind == BESIDE
        self.target_suffix = self.spec.suffix if stored else None
        self.hear_targets: HearTargets | None = None

    def encoder_args(self) -> dict:
        m, c = self.cfg.model, self.cfg.cat
        variant = get_variant(m.variant)
        return {
            "in_chans": FEATURE_CHANNELS[variant["features"]],
            "strides": variant["encoder"]["strides"],
            "stem_dims": tuple(c.stem_dims),
            "stem_depths": tuple(c.stem_depths),
            "embed_dim": m.embed_dim,
            "depth": m.depth,
            "num_heads": m.num_heads,
            "mlp_ratio": m.mlp_ratio,
        }

    def build(self, device: torch.device, out: Path, units: list[Unit]) -> nn.Module:
        """The pretraining model; with HEAR targets, also loads the external module."""
        c = self.cfg.cat
        rr_dim = 0
        if self.spec is not None and self.target_suffix is None:
            # Loading the external module must not move the RNG: the run's initial weights
            # are the same with and without regularization.
            with torch.random.fork_rng(devices=[]):
                self.hear_targets = HearTargets(
                    self.spec.module, self.spec.checkpoint, out / RR_CACHE, device
                )
            rr_dim = self.hear_targets.dim
        elif self.target_suffix is not None:
            rr_dim = first_stored_target(units, self.target_suffix).shape[0]
        model = CatPretrainer(
            self.encoder_args(),
            decoder_dim=c.decoder_dim,
            decoder_depth=c.decoder_depth,
            decoder_kernel=c.decoder_kernel,
            decoder_groups=c.decoder_groups,
            mask_ratio=self.cfg.model.mask_ratio,
            mask_block=c.mask_block,
            clones=c.clones,
            top_k=c.top_k or None,
            utterance_weight=c.utterance_weight,
            ema_start=c.ema_start,
            ema_end=c.ema_end,
            ema_anneal_steps=c.ema_anneal_steps,
            rr_dim=rr_dim,
            rr_weight=c.rr_weight,
            rr_layer=c.rr_layer,
            rr_loss=c.rr_loss,
        )
        return model.to(device)

    def init_from(self, model: CatPretrainer, ref: str) -> str:
        """Start student and teacher from a hear_gram CAT checkpoint (folder or Hub
        reference); the decoder keeps its initial weights."""
        encoder, _ = load_encoder(ref, self.cfg.model.variant)
        load_state_strict(model.encoder, encoder.state_dict(), f"{ref} (encoder)")
        model.teacher.load_state_dict(model.encoder.state_dict())
        return f"student and teacher from hear_gram checkpoint {ref}; decoder freshly initialised"

    def loss(
        self, model: nn.Module, bare: nn.Module, x: Tensor, batch: dict, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        target = None
        if self.target_suffix is not None:
            target = batch["rr_target"]
        elif self.hear_targets is not None:
            target = self.hear_targets(batch["keys"], batch["audio"])
        if target is not None:
            target = target.to(x.device).repeat_interleave(x.shape[0] // target.shape[0], dim=0)
        return model(x, target, generator)

    def after_step(self, bare: CatPretrainer, step: int) -> None:
        """The EMA teacher follows the student."""
        bare.update_teacher(step)


FAMILIES = {"gram": GramFamily, "gram-m": GramFamily, "cat": CatFamily}


def family_of(cfg: Config) -> GramFamily | CatFamily:
    """The family of ``cfg.model.variant``."""
    return FAMILIES[get_variant(cfg.model.variant)["architecture"]](cfg)
