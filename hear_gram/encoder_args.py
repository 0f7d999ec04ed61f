"""Encoder arguments read from untrusted files (a checkpoint's ``config.json``, a Hub
repository's foreign ``config.json``), checked before anything is built.

Every argument is bounded (an ``embed_dim`` of 1e7 would allocate until the OOM killer), the
sizes the weights fix (width, depth, input channels, patch, MLP width) must equal what the
weights say, and the feature geometry is hear_gram's own (128 mels, 200-frame chunks).
Every problem is a :class:`~hear_gram.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import math

from torch import Tensor

from hear_gram import features as feat
from hear_gram.errors import CheckpointError

# (low, high) of each numeric argument any encoder takes
BOUNDS: dict[str, tuple[float, float]] = {
    "in_chans": (1, 16),
    "embed_dim": (4, 4096),
    "depth": (1, 64),
    "num_heads": (1, 256),
    "mlp_ratio": (0.25, 16),
    "norm_eps": (1e-12, 1e-2),
    "d_state": (1, 1024),
    "d_conv": (1, 16),
    "expand": (1, 8),
    "headdim": (1, 1024),
    "ngroups": (1, 64),
    "chunk_size": (1, 4096),
}
FIXED = {"n_mels": feat.N_MELS, "chunk_frames": 200}
NORMS = ("layernorm", "rmsnorm")

# Names a foreign config.json may use for our arguments (transformers, the reference's
# hyper-parameters), first match wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "in_chans": ("in_chans", "in_channels", "num_channels", "input_channels"),
    "embed_dim": (
        "embed_dim", "hidden_size", "encoder_embedding_dim", "encoder_embed_dim", "d_model",
    ),
    "depth": ("depth", "num_hidden_layers", "encoder_depth", "n_layer", "num_layers"),
    "num_heads": ("num_heads", "num_attention_heads", "encoder_num_heads"),
    "mlp_ratio": ("mlp_ratio",),
    "norm_eps": ("norm_eps", "layer_norm_eps", "norm_epsilon"),
}  # fmt: skip


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def bound_problems(args: dict) -> list[str]:
    """Arguments outside their bounds or of the wrong type (``name value: why``)."""
    problems = []
    for name, value in args.items():
        if name in BOUNDS:
            low, high = BOUNDS[name]
            integer = isinstance(low, int) and name != "mlp_ratio"
            if not _number(value) or (integer and value != int(value)) or not low <= value <= high:
                kind = "an integer" if integer else "a number"
                problems.append(f"{name} {value!r}: not {kind} in [{low}, {high}]")
        elif name in FIXED and value != FIXED[name]:
            problems.append(f"{name} {value!r}: hear_gram's features give {FIXED[name]}")
        elif name == "patch_size":
            ok = isinstance(value, list | tuple) and len(value) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            )  # fmt: skip
            if not ok or feat.N_MELS % value[0] or 200 % value[1] or min(value) < 1:
                problems.append(f"patch_size {value!r}: not 2 integers tiling a 128 x 200 chunk")
        elif name == "norm" and value not in NORMS:
            problems.append(f"norm {value!r}: not one of {list(NORMS)}")
        elif name in ("stem_dims", "stem_depths", "strides"):
            flat = value if name != "strides" else [v for pair in value or [] for v in pair]
            if not isinstance(value, list | tuple) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in flat
            ):
                problems.append(f"{name} {value!r}: not a list of integers in [1, 4096]")
    if not problems and "num_heads" in args and "embed_dim" in args:
        if args["embed_dim"] % args["num_heads"]:
            problems.append(
                f"num_heads {args['num_heads']} does not divide embed_dim {args['embed_dim']}"
            )
    return problems


def weight_sizes(state: dict[str, Tensor]) -> dict:
    """The sizes a state dict in hear_gram's key layout fixes: width (the CLS token), depth
    (the blocks), and where present input channels and patch (the patch convolution) and
    the MLP width ratio."""
    sizes = {}
    if "cls_token" in state:
        sizes["embed_dim"] = state["cls_token"].shape[-1]
    blocks = {k.split(".")[1] for k in state if k.startswith("blocks.")}
    if blocks:
        sizes["depth"] = len(blocks)
    proj = state.get("patch_embed.proj.weight")
    if proj is not None and proj.dim() == 4:
        sizes["in_chans"], sizes["patch_size"] = proj.shape[1], (proj.shape[2], proj.shape[3])
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and "embed_dim" in sizes:
        sizes["mlp_ratio"] = fc1.shape[0] / sizes["embed_dim"]
    return sizes


def check_args(args: dict, state: dict[str, Tensor], where: str) -> None:
    """Refuse ``args`` out of bounds or disagreeing with the weights, before any building.

    Raises:
        CheckpointError: every problem, naming ``where``.
    """
    problems = bound_problems(args)
    for name, size in weight_sizes(state).items():
        if name in args:
            value = tuple(args[name]) if name == "patch_size" else args[name]
            if value != size and not (name == "mlp_ratio" and abs(value - size) < 1e-6):
                problems.append(f"{name} {args[name]!r} but the weights have {size}")
    if problems:
        raise CheckpointError(f"{where}: the encoder arguments do not fit: " + "; ".join(problems))


def foreign_args(config: dict) -> dict:
    """Our arguments among a foreign ``config.json``'s keys (:data:`ALIASES`; the
    reference's ``fshape``/``tshape`` or ``patch_size`` give the patch), top level or under
    an ``encoder``/``model`` object; only those it has."""
    scopes = [config] + [config[k] for k in ("encoder", "model") if isinstance(config.get(k), dict)]
    args: dict = {}
    for scope in scopes:
        for ours, names in ALIASES.items():
            for name in names:
                if ours not in args and name in scope:
                    args[ours] = scope[name]
        if "patch_size" not in args:
            if "fshape" in scope and "tshape" in scope:
                args["patch_size"] = [scope["fshape"], scope["tshape"]]
            elif isinstance(scope.get("patch_size"), list | tuple):
                args["patch_size"] = list(scope["patch_size"])
    return args
