"""An independent model in the reference GRAM-T layout (torchvision ViT key names), used as a
numerical oracle: our converter must map its weights onto GramEncoder with equal outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hear_gram import features as feat
from hear_gram.layers import sincos_2d


class ReferenceBlock(nn.Module):
    """torchvision ``EncoderBlock`` structure: ln_1, self_attention, ln_2, mlp.{0,3}."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(hidden, dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.self_attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class ReferenceEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.Sequential()
        for i in range(depth):
            self.layers.add_module(f"encoder_layer_{i}", ReferenceBlock(dim, heads, 4 * dim))
        self.ln = nn.LayerNorm(dim, eps=1e-6)


class ReferenceGramT(nn.Module):
    """Patch conv, CLS token, ``encoder.pos_embedding`` (fixed sin-cos), torchvision blocks."""

    def __init__(self, in_chans: int, patch: tuple[int, int], dim: int, depth: int, heads: int):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.grid = (feat.N_MELS // patch[0], 200 // patch[1])
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.encoder = ReferenceEncoder(dim, depth, heads)
        self.encoder.pos_embedding = nn.Parameter(sincos_2d(dim, self.grid), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        h = h + self.encoder.pos_embedding
        return self.encoder.ln(self.encoder.layers(h))


def reference_state_dict(model: ReferenceGramT, prefix: str = "model.") -> dict[str, Tensor]:
    """The model's weights as the Hugging Face release stores them: prefixed keys, the mel
    front end's buffers (also the wrapper's copies) and decoder keys."""
    state = {prefix + k: v.detach().clone() for k, v in model.state_dict().items()}
    for owner in ("melspec.", "mel_spec.melspec."):
        state[prefix * (owner == "melspec.") + owner + "spectrogram.window"] = (
            feat.analysis_window()
        )
        state[prefix * (owner == "melspec.") + owner + "mel_scale.fb"] = feat.mel_filterbank()
    state[prefix + "mask_token"] = torch.zeros(1, 1, 16)
    state[prefix + "decoder_embed.weight"] = torch.randn(16, model.cls_token.shape[-1])
    state[prefix + "decoder_blocks.0.wmha.attn_heads.0.relative_position_bias_table"] = torch.randn(
        3, 1
    )
    return state


# --- GRAM-M (labhamlet/GRAM-M: mamba_ssm MixerModel key names) ---------------------------


def recurrence(x, dt, A, B, C, initial_state=None):
    """``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T``, ``y_t = h_t C_t``, one step at a time,
    in float64. ``x`` ``(b, L, H, P)``, ``dt`` ``(b, L, H)``, ``B``, ``C`` ``(b, L, G, N)``."""
    b, length, h, p = x.shape
    g, n = B.shape[-2:]
    group = torch.arange(h) // (h // g)
    state = torch.zeros(b, h, p, n, dtype=torch.float64)
    if initial_state is not None:
        state = initial_state.double().clone()
    ys = []
    for t in range(length):
        bt, ct = B[:, t, group].double(), C[:, t, group].double()  # (b, h, n)
        decay = torch.exp(dt[:, t].double() * A.double())  # (b, h)
        inp = (dt[:, t, :, None].double() * x[:, t].double())[..., None] * bt[:, :, None, :]
        state = decay[..., None, None] * state + inp
        ys.append(torch.einsum("bhpn,bhn->bhp", state, ct))
    return torch.stack(ys, dim=1), state


class ReferenceMamba2(nn.Module):
    """mamba_ssm ``Mamba2``'s parameters under its names, computed step by step in float64:
    ``in_proj`` to ``[z, xBC, dt]``, causal depthwise conv + SiLU, the recurrence with the
    ``D`` skip, ``rmsnorm(y * silu(z))`` per group, ``out_proj``."""

    def __init__(self, dim, d_state, d_conv, expand, headdim, ngroups):
        super().__init__()
        self.d_inner, self.d_state, self.ngroups, self.headdim = (
            expand * dim,
            d_state,
            ngroups,
            headdim,
        )
        self.nheads = self.d_inner // headdim
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(dim, self.d_inner + self.conv_dim + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim)
        self.dt_bias = nn.Parameter(torch.randn(self.nheads) * 0.5 - 2.0)
        self.A_log = nn.Parameter(torch.empty(self.nheads).uniform_(1.0, 16.0).log())
        self.D = nn.Parameter(torch.randn(self.nheads))
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(1.0 + 0.1 * torch.randn(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)

    def forward(self, u):
        b, length, _ = u.shape
        h, p, g, n, d = self.nheads, self.headdim, self.ngroups, self.d_state, self.d_inner
        z, xbc, dt = (u.double() @ self.in_proj.weight.double().T).split(
            [d, self.conv_dim, h], dim=-1
        )
        w = self.conv1d.weight.double()[:, 0]
        k = w.shape[1]
        padded = torch.cat([xbc.new_zeros(b, k - 1, self.conv_dim), xbc], dim=1)
        conv = torch.stack([(padded[:, t : t + k] * w.T).sum(1) for t in range(length)], 1)
        x, B, C = F.silu(conv + self.conv1d.bias.double()).split([d, g * n, g * n], dim=-1)
        x = x.reshape(b, length, h, p)
        dt = F.softplus(dt + self.dt_bias.double())
        y, _ = recurrence(
            x, dt, -torch.exp(self.A_log.double()), B.reshape(b, length, g, n),
            C.reshape(b, length, g, n),
        )  # fmt: skip
        y = (y + x * self.D.double()[:, None]).reshape(b, length, d) * F.silu(z)
        groups = y.unflatten(-1, (g, d // g))
        y = (groups * torch.rsqrt(groups.square().mean(-1, keepdim=True) + 1e-5)).flatten(-2)
        return (y * self.norm.weight.double()) @ self.out_proj.weight.double().T


class ReferenceRMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-5) * self.weight.double()


class ReferenceGramM(nn.Module):
    """GRAMM's encoder path: patch conv, ``encoder_pos_embed``, CLS first, ``encoder_v``
    (``layers.N.{norm, mixer}``, ``norm_f``), and the never-applied ``encoder_norm``."""

    def __init__(self, in_chans, patch, dim, depth, rms_norm=False, d_state=16, headdim=16):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, dim, patch, patch)
        grid = (feat.N_MELS // patch[0], 200 // patch[1])
        self.encoder_pos_embed = nn.Parameter(sincos_2d(dim, grid), requires_grad=False)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.encoder_norm = nn.LayerNorm(dim)

        def norm():
            return ReferenceRMSNorm(dim) if rms_norm else nn.LayerNorm(dim, eps=1e-5)

        self.encoder_v = nn.Module()
        self.encoder_v.layers = nn.ModuleList()
        for _ in range(depth):
            layer = nn.Module()
            layer.norm = norm()
            layer.mixer = ReferenceMamba2(dim, d_state, 4, 2, headdim, 1)
            self.encoder_v.layers.append(layer)
        self.encoder_v.norm_f = norm()

    def forward(self, x: Tensor) -> Tensor:
        """Float64 tokens ``(B, 1 + N, D)`` after ``norm_f``."""
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        h = (h + self.encoder_pos_embed).double()
        for layer in self.encoder_v.layers:
            h = h + layer.mixer(_norm64(layer.norm, h))
        return _norm64(self.encoder_v.norm_f, h)


def _norm64(norm: nn.Module, h: Tensor) -> Tensor:
    if isinstance(norm, nn.LayerNorm):
        return F.layer_norm(h, h.shape[-1:], norm.weight.double(), norm.bias.double(), norm.eps)
    return norm(h)
