"""CAT pretraining model: student, EMA teacher, CNN decoder, losses, representation
regularization.

One step on a batch of normalised chunks ``x (B, C, 128, 200)``:

1. The teacher (an EMA copy of the whole encoder, stem included, fp32) encodes ``x``
   unmasked. Frame targets ``y (B, N, D)``: the mean of its top-K block outputs, each
   instance-normalised over the tokens, then layer-normalised.
2. The student encodes ``clones`` copies of each chunk, each with its own inverse block mask;
   masked tokens are zeroed inside its conv stages and left out of its Transformer.
3. The CNN decoder sees the student's tokens on the full grid (masked positions hold small
   noise) and predicts ``y`` at the masked positions: the frame loss.
4. The student's CLS token predicts the mean of ``y`` over tokens: the utterance loss.
5. Optionally, a linear projection of the student's CLS token (the final or a chosen layer)
   predicts a per-clip vector from a frozen external encoder: the regularization loss.

Squared and absolute errors are summed over the feature axis and scaled by ``1 / sqrt(D)``,
as in data2vec 2.0, then averaged over positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hear_gram.cat import CatEncoder
from training.cat_masking import inverse_block_mask, keep_indices
from training.ema import ema_decay, ema_update, make_teacher

RR_LOSSES = ("mse", "cosine", "l1")


class DecoderLayer(nn.Module):
    """Grouped 2-D convolution, LayerNorm over channels, GELU: ``(B, C_in, H, W)`` to
    ``(B, C, H, W)``."""

    def __init__(self, in_dim: int, dim: int, kernel_size: int = 3, groups: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, dim, kernel_size, padding=kernel_size // 2, groups=groups)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.conv(x).permute(0, 2, 3, 1))
        return self.act(x).permute(0, 3, 1, 2)


class CnnDecoder(nn.Module):
    """data2vec 2.0 2-D CNN decoder over the token grid: residual conv layers, then a linear
    projection. ``(B, N, D_in)`` frequency-major tokens to ``(B, N, out_dim)``."""

    def __init__(
        self,
        in_dim: int,
        grid: tuple[int, int],
        dim: int = 768,
        depth: int = 6,
        kernel_size: int = 3,
        groups: int = 16,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.layers = nn.ModuleList(
            DecoderLayer(in_dim if i == 0 else dim, dim, kernel_size, groups) for i in range(depth)
        )
        self.proj = nn.Linear(dim, out_dim or in_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        h = x.transpose(1, 2).reshape(b, d, *self.grid)
        for layer in self.layers:
            out = layer(h)
            h = out + h if out.shape == h.shape else out
        return self.proj(h.flatten(2).transpose(1, 2))


def teacher_targets(layers: list[Tensor], top_k: int | None = None) -> Tensor:
    """Frame targets from the teacher's block outputs ``(B, 1 + N, D)`` (CLS first): the mean
    of the last ``top_k`` (all when None), each instance-normalised over the N tokens, then
    layer-normalised. Returns ``(B, N, D)`` float32."""
    chosen = layers if top_k is None else layers[-top_k:]
    y = sum(F.instance_norm(h[:, 1:].float().transpose(1, 2)).transpose(1, 2) for h in chosen)
    y = y / len(chosen)
    return F.layer_norm(y, y.shape[-1:])


def frame_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over positions of the squared error summed over features, over sqrt(D):
    ``(..., D)`` pairs to a scalar."""
    return (pred.float() - target).square().sum(dim=-1).mean() / math.sqrt(target.shape[-1])


def regularization_loss(pred: Tensor, target: Tensor, kind: str = "mse") -> Tensor:
    """Loss between projected student vectors and external targets, both ``(B, D)``: ``mse``
    or ``l1`` (summed over D, over sqrt(D), mean over B) or ``cosine`` (1 - cosine similarity,
    mean over B)."""
    pred, target = pred.float(), target.float()
    if kind == "mse":
        return frame_loss(pred, target)
    if kind == "l1":
        return (pred - target).abs().sum(dim=-1).mean() / math.sqrt(target.shape[-1])
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()
    raise ValueError(f"unknown regularization loss {kind!r}; choose one of {RR_LOSSES}")


class CatPretrainer(nn.Module):
    """Student encoder (``encoder``, what is exported), EMA ``teacher``, CNN ``decoder`` and the
    optional regularization head ``rr_head``.

    The teacher is a submodule (saved and restored with the model) whose parameters do not
    require gradients: give the optimiser only ``p.requires_grad`` parameters, and call
    :meth:`update_teacher` after every optimiser step.
    """

    def __init__(
        self,
        encoder_args: dict,
        decoder_dim: int = 768,
        decoder_depth: int = 6,
        decoder_kernel: int = 3,
        decoder_groups: int = 16,
        mask_ratio: float = 0.8,
        mask_block: int = 5,
        clones: int = 4,
        top_k: int | None = None,
        utterance_weight: float = 1.0,
        noise_std: float = 0.01,
        ema_start: float = 0.9998,
        ema_end: float = 0.99999,
        ema_anneal_steps: int = 100_000,
        rr_dim: int = 0,
        rr_weight: float = 1.0,
        rr_layer: int = -1,
        rr_loss: str = "mse",
    ) -> None:
        super().__init__()
        if rr_loss not in RR_LOSSES:
            raise ValueError(f"rr_loss must be one of {RR_LOSSES}, got {rr_loss!r}")
        if clones < 1:
            raise ValueError(f"clones must be at least 1, got {clones}")
        self.encoder = CatEncoder(**encoder_args)
        depth = len(self.encoder.blocks)
        if not -1 <= rr_layer < depth:
            raise ValueError(f"rr_layer must be -1 (final output) or a block in [0, {depth})")
        if top_k is not None and not 1 <= top_k <= depth:
            raise ValueError(f"top_k must be in [1, {depth}], got {top_k}")
        self.teacher = make_teacher(self.encoder)
        width = self.encoder.embed_dim
        self.decoder = CnnDecoder(
            width, self.encoder.grid, decoder_dim, decoder_depth, decoder_kernel, decoder_groups
        )
        self.rr_head = nn.Linear(width, rr_dim) if rr_dim else None
        self.mask_ratio, self.mask_block, self.clones = mask_ratio, mask_block, clones
        self.top_k, self.utterance_weight, self.noise_std = top_k, utterance_weight, noise_std
        self.ema = (ema_start, ema_end, ema_anneal_steps)
        self.rr_weight, self.rr_layer, self.rr_loss = rr_weight, rr_layer, rr_loss

    def train(self, mode: bool = True) -> CatPretrainer:
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def update_teacher(self, step: int) -> float:
        """EMA update after optimiser step ``step``; returns the decay used."""
        decay = ema_decay(step, *self.ema)
        ema_update(self.teacher, self.encoder, decay)
        return decay

    def forward(
        self,
        x: Tensor,
        rr_target: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict]:
        """Loss of one batch.

        Args:
            x: ``(B, C, 128, 200)`` normalised chunks.
            rr_target: ``(B, D_rr)`` external target of each chunk's clip, when the model
                has a regularization head.
            generator: draws the masks and the decoder's noise (on ``x``'s device).
        Returns:
            ``(loss, parts)``: the scalar loss and its detached parts by name.
        """
        if (rr_target is None) != (self.rr_head is None):
            raise ValueError("pass rr_target exactly when the model has a regularization head")
        with torch.no_grad():
            y = teacher_targets(self.teacher.forward_layers(x), self.top_k)
        y = y.repeat_interleave(self.clones, dim=0)
        xs = x.repeat_interleave(self.clones, dim=0)
        mask = inverse_block_mask(
            xs.shape[0],
            self.encoder.grid,
            self.mask_ratio,
            self.mask_block,
            generator=generator,
            device=x.device,
        )
        keep = keep_indices(mask)
        layers = self.encoder.forward_layers(xs, keep=keep)
        h = self.encoder.norm(layers[-1])
        visible = h[:, 1:]
        noise = torch.randn((*y.shape[:2], visible.shape[-1]), generator=generator, device=x.device)
        grid_in = (noise * self.noise_std).to(visible.dtype)
        grid_in = grid_in.scatter(1, keep[..., None].expand(-1, -1, visible.shape[-1]), visible)
        pred = self.decoder(grid_in)
        parts = {
            "frame": frame_loss(pred[mask], y[mask]),
            "utterance": frame_loss(h[:, 0], y.mean(dim=1)),
        }
        loss = parts["frame"] + self.utterance_weight * parts["utterance"]
        if self.rr_head is not None:
            cls = h[:, 0] if self.rr_layer == -1 else layers[self.rr_layer][:, 0]
            target = rr_target.to(x.device).repeat_interleave(self.clones, dim=0)
            parts["rr"] = regularization_loss(self.rr_head(cls), target, self.rr_loss)
            loss = loss + self.rr_weight * parts["rr"]
        return loss, {k: v.detach() for k, v in parts.items()}
