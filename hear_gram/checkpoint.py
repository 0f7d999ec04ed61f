"""Checkpoints: a folder in Hugging Face layout (``config.json`` + ``model.safetensors``).

``config.json`` written by hear_gram::

    {"format": "hear-gram", "format_version": 1, "variant": "gram-binaural",
     "architecture": "gram", "features": "binaural", "encoder": {...encoder arguments...},
     "metadata": {...free-form: what it was trained on, steps, ...}}

A reference ``ref`` is resolved in this order: ``"random"`` (untrained weights, seeded), an
existing local folder or ``.safetensors`` file, a Hugging Face Hub repository
``org/name`` or ``org/name@revision`` (downloaded through ``huggingface_hub``, which honours
``HF_HUB_OFFLINE``, ``HF_HOME`` and ``HF_HUB_CACHE``). Weights are never unpickled and no
repository code is run: a folder holds ``model.safetensors``, one ``.safetensors`` file, or
shards listed by ``model.safetensors.index.json``; a ``config.json`` that is not
hear_gram's (a ``transformers`` repository's) lends the hyper-parameters it has
(:mod:`hear_gram.encoder_args`), checked against the weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from hear_gram.atomic import save_safetensors, temp_dir
from hear_gram.encoder_args import check_args, foreign_args
from hear_gram.errors import CheckpointError
from hear_gram.reference import detect
from hear_gram.variants import (
    REFERENCE_CONVERTERS,
    REFERENCE_LAYOUTS,
    VARIANTS,
    create_encoder,
    get_variant,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
FORMAT = "hear-gram"
FORMAT_VERSION = 1
RANDOM = "random"
RANDOM_SEED = 0
_HUB_REF = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def make_config(variant: str, encoder_args: dict, metadata: dict | None = None) -> dict:
    """The ``config.json`` content of a checkpoint of ``variant``."""
    spec = get_variant(variant)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "architecture": spec["architecture"],
        "features": spec["features"],
        "encoder": {k: list(v) if isinstance(v, tuple) else v for k, v in encoder_args.items()},
        "metadata": metadata or {},
    }


def save_checkpoint(
    folder: str | Path,
    encoder: nn.Module,
    variant: str,
    encoder_args: dict,
    metadata: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``encoder`` as a checkpoint folder, atomically (a temporary folder, then rename).

    Raises:
        FileExistsError: ``folder`` exists and ``overwrite`` is False.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; choose another folder or remove it first")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(folder.parent, f".{folder.name}.")
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
        save_safetensors(state, tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        config = make_config(variant, encoder_args, metadata)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def hub_cache() -> str | None:
    """The Hub cache the environment names now (``HF_HUB_CACHE``, else ``HF_HOME/hub``;
    huggingface_hub reads them once, when first imported), or None for its default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None


def download(ref: str) -> Path:
    """Local snapshot folder of Hub repository ``org/name[@revision]``, for a ``ref`` that
    names no local file or folder.

    Raises:
        CheckpointError: not downloadable (offline, no network, unknown repository) and not
            in the local cache; the message says that no local path of that name exists,
            why the Hub failed, and how to get the weights. Raised without chaining (the
            Hub's exception stays in ``__context__``), so a traceback shows one error.
    """
    from huggingface_hub import snapshot_download

    repo_id, _, revision = ref.partition("@")
    try:
        path = snapshot_download(
            repo_id,
            revision=revision or None,
            allow_patterns=["*.json", "*.safetensors"],
            cache_dir=hub_cache(),
        )
    except Exception as error:  # huggingface_hub raises many types for "not reachable"
        detail = (str(error).strip().splitlines() or [""])[0]
        command = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
        raise CheckpointError(
            f"no local file or folder {ref!r} exists (relative to {Path.cwd()}), and the "
            "Hugging Face Hub repository of that name could not be downloaded nor found in "
            f"the local cache ({type(error).__name__}: {detail}). For a local checkpoint, "
            "check the path (`python -m training.export RUN OUT` or `python -m "
            "hear_gram.convert` write one); for the Hub, run "
            f"`{command}` on a machine with network access (then copy the cache, HF_HOME, "
            "here); or pass 'random' for untrained weights"
        ) from None
    return Path(path)


def resolve(ref: str) -> Path:
    """A local path for ``ref``: an existing file or folder, or a downloaded Hub snapshot."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    if _HUB_REF.match(ref) and not ref.startswith((".", "/", "~")):
        return download(ref)
    raise CheckpointError(
        f"checkpoint {ref!r} is neither an existing file or folder nor a Hub reference "
        "(org/name[@revision]); pass a checkpoint folder, a .safetensors file, a Hub "
        "reference or 'random'"
    )


def read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file.

    Raises:
        CheckpointError: missing, or not a complete safetensors file (truncated by an
            interrupted copy or download, or another format); the message names the file.
    """
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (or is not a file)")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({error}): it is truncated (an "
            "interrupted copy or download) or in another format. Copy or download it again, "
            "or write it anew (`python -m training.export RUN OUT`, or `python -m "
            "hear_gram.convert` for a reference checkpoint)"
        ) from None


def read_config(path: Path) -> tuple[dict | None, dict | None]:
    """The ``config.json`` at ``path``, read once: ``(config, None)`` for hear_gram's,
    ``(None, content)`` for another library's (a ``transformers`` config beside
    reference-layout weights), ``(None, None)`` when absent or not a JSON object.

    Raises:
        CheckpointError: not valid JSON, or a hear-gram config that lacks a field, has the
            wrong type for one, names an unknown variant or comes from a newer format.
    """
    if not path.is_file():
        return None, None
    fix = "restore it from where the checkpoint came from, or write the folder anew"
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}): {fix}") from None
    if not isinstance(config, dict):
        return None, None
    if config.get("format") != FORMAT:
        return None, config
    fields = {
        "format_version": int,
        "variant": str,
        "architecture": str,
        "features": str,
        "encoder": dict,
    }
    problems = [
        f"{name!r} missing" if name not in config else f"{name!r} is not a {kind.__name__}"
        for name, kind in fields.items()
        if not isinstance(config.get(name), kind)
    ]
    if problems:
        raise CheckpointError(f"{path}: {', '.join(problems)}: {fix}")
    if config["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {config['format_version']}; this hear_gram reads "
            f"version {FORMAT_VERSION}: upgrade hear_gram"
        )
    if config["variant"] not in VARIANTS:
        raise CheckpointError(
            f"{path} names variant {config['variant']!r}, which this hear_gram does not know "
            f"(it knows {sorted(VARIANTS)}): upgrade hear_gram, or fix the file"
        )
    spec = VARIANTS[config["variant"]]
    wrong = [k for k in ("architecture", "features") if config[k] != spec[k]]
    if wrong:
        raise CheckpointError(
            f"{path}: {config['variant']} has "
            + ", ".join(f"{k} {spec[k]!r}, not {config[k]!r}" for k in wrong)
            + f": {fix}"
        )
    return config, None


def read_sharded(index: Path) -> dict[str, Tensor]:
    """The tensors of the shards a ``model.safetensors.index.json`` lists (shard names must
    be plain file names beside it; every key from the shard the index names)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index} is not a safetensors index ({error})") from None
    state: dict[str, Tensor] = {}
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index} names shard {shard!r}, not a file beside it")
        tensors = read_weights(index.parent / shard)
        state.update({k: v for k, v in tensors.items() if weight_map.get(k) == shard})
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index} lists keys its shards do not hold: {missing[:10]}")
    return state


def read_state(weights: Path) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file or of the shards of an index."""
    return read_sharded(weights) if weights.name.endswith(".index.json") else read_weights(weights)


def _weights_and_config(path: Path) -> tuple[Path, dict | None, dict | None]:
    """The weights file (or shard index), hear_gram's config (None when absent or foreign)
    and a foreign ``config.json``'s content (None when absent or hear_gram's)."""
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.exists():
            index = path / INDEX_NAME
            found = sorted(path.glob("*.safetensors"))
            if index.is_file():
                weights = index
            elif len(found) != 1:
                raise CheckpointError(
                    f"{path} holds no {WEIGHTS_NAME} (safetensors files there: "
                    f"{[f.name for f in found]}); a checkpoint folder needs exactly one, or "
                    f"shards listed by {index.name}"
                )
            else:
                weights = found[0]
        config_path = path / CONFIG_NAME
    else:
        if path.suffix != ".safetensors":
            raise CheckpointError(
                f"{path} is not a .safetensors file; hear_gram never unpickles weights "
                "(.ckpt/.pt/.bin can run code): convert it with "
                "`python -m hear_gram.convert IN OUT_FOLDER --variant NAME`"
            )
        weights, config_path = path, path.with_name(CONFIG_NAME)
    return weights, *read_config(config_path)


def load_state_strict(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with one error naming every missing, unexpected and
    mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if shapes:
        problems.append(f"shape mismatches {shapes}")
    if problems:
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _check_variant(found: str, wanted: str, source: str) -> None:
    if found != wanted:
        module = "hear_gram." + found.replace("-", "_")
        raise CheckpointError(
            f"{source} is a {found} checkpoint, not {wanted}: load it with {module}"
        )


def _variant_from_shapes(args: dict, wanted: str) -> dict:
    """Check inferred encoder arguments against the variant; fold 2-channel clean models."""
    spec = get_variant(wanted)
    want = spec["encoder"]
    if (
        spec["features"] == "mono"
        and args["in_chans"] == 2
        and tuple(args["patch_size"]) == tuple(want["patch_size"])
    ):
        return {**args, "in_chans": 1, "fold_stereo": True}
    if args["in_chans"] != want["in_chans"] or tuple(args["patch_size"]) != tuple(
        want["patch_size"]
    ):
        guess = [
            name
            for name, other in VARIANTS.items()
            if other["architecture"] == spec["architecture"]
            and other["encoder"]["in_chans"] == args["in_chans"]
            and tuple(other["encoder"]["patch_size"]) == tuple(args["patch_size"])
        ]
        hint = (
            f"; it looks like {guess[0]} (hear_gram.{guess[0].replace('-', '_')})" if guess else ""
        )
        raise CheckpointError(
            f"checkpoint has {args['in_chans']} input channels and {tuple(args['patch_size'])} "
            f"patches, but {wanted} takes {want['in_chans']} and {tuple(want['patch_size'])}{hint}"
        )
    return args


def load_encoder(ref: str, variant: str) -> tuple[nn.Module, dict]:
    """Load the encoder of ``variant`` from ``ref`` (see the module docstring).

    Returns:
        ``(encoder, config)`` with ``config`` in hear_gram's ``config.json`` form (for a
        reference-layout checkpoint: inferred from its shapes). The decoder weights of a
        reference checkpoint are left out (see :func:`load_reference`).
    Raises:
        CheckpointError: not found, another variant, or keys/shapes that do not fit.
    """
    spec = get_variant(variant)
    if ref == RANDOM:
        encoder = create_encoder(spec["architecture"], spec["encoder"], seed=RANDOM_SEED)
        return encoder, make_config(variant, spec["encoder"], {"weights": RANDOM})
    path = resolve(ref)
    source = describe_source(ref, path)
    weights, config, foreign = _weights_and_config(path)
    state = read_state(weights)
    if config is not None:
        _check_variant(config["variant"], variant, str(weights))
        check_args(config["encoder"], state, f"{source}: {CONFIG_NAME}")
        try:
            encoder = create_encoder(config["architecture"], config["encoder"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(
                f"the encoder arguments in {weights.with_name(CONFIG_NAME)} do not build a "
                f"{config['architecture']} encoder ({error}): restore the file from where the "
                "checkpoint came from, or write the folder anew"
            ) from None
        load_state_strict(encoder, state, source)
        return encoder, config
    return encoder_from_reference(state, variant, source, foreign)


def describe_source(ref: str, path: Path) -> str:
    """How messages and metadata name a checkpoint: ``org/name@commit`` for a Hub snapshot
    (the revision the cache holds), else the path."""
    if path != Path(ref).expanduser() and path.parent.name == "snapshots":
        return f"{ref.partition('@')[0]}@{path.name}"
    return str(path)


def _plain(value: object) -> object:
    """``value`` with tuples as lists, so that a JSON list equals a shape tuple."""
    return list(value) if isinstance(value, list | tuple) else value


def encoder_from_reference(
    state: dict[str, Tensor], variant: str, source: str, foreign: dict | None = None
) -> tuple[nn.Module, dict]:
    """Build ``variant``'s encoder from a reference-layout state dict, loading strictly.

    The arguments come from the weights' shapes; a foreign ``config.json`` (``foreign``)
    lends those the shapes cannot tell (heads, norm epsilon) and must agree with the rest.
    A 2-channel reference model loaded as a mono variant is folded to 1 input channel
    (patch weights summed over channels), which is exact for mono copied to both channels.
    """
    spec = get_variant(variant)
    if spec["architecture"] not in REFERENCE_CONVERTERS:
        raise CheckpointError(
            f"{source} has no hear-gram config.json, and {variant} has no foreign weight "
            f"layout to convert from: pass a checkpoint folder written by hear_gram "
            "(config.json + model.safetensors, e.g. from `python -m training.export`)"
        )
    found = detect(state, REFERENCE_LAYOUTS)
    if found is not None and found.architecture != spec["architecture"]:
        fitting = sorted(n for n, v in VARIANTS.items() if v["architecture"] == found.architecture)
        modules = ", ".join("hear_gram." + n.replace("-", "_") for n in fitting)
        raise CheckpointError(
            f"{source} is a reference {found.name} checkpoint, not a {variant} one: load it "
            f"with a {found.name} module ({modules})"
        )
    encoder_state, _, args = REFERENCE_CONVERTERS[spec["architecture"]](state)
    lent = {k: v for k, v in foreign_args(foreign or {}).items() if k in args or k == "norm_eps"}
    clash = [
        f"{k} {v!r} in config.json but {args[k]!r} in the weights"
        for k, v in lent.items()
        if k in args and k not in ("num_heads", "norm_eps") and _plain(v) != _plain(args[k])
    ]
    if clash:
        raise CheckpointError(f"{source}: its config.json disagrees with its weights: {clash}")
    args.update({k: lent[k] for k in ("num_heads", "norm_eps") if k in lent})
    check_args(args, encoder_state, source)
    args = _variant_from_shapes(args, variant)
    if args.pop("fold_stereo", False):
        w = encoder_state["patch_embed.proj.weight"]
        encoder_state["patch_embed.proj.weight"] = w.sum(dim=1, keepdim=True)
    encoder = create_encoder(spec["architecture"], args)
    load_state_strict(encoder, encoder_state, f"{source} (reference layout)")
    return encoder, make_config(variant, args, {"converted_from": source})


def load_reference(path: str | Path) -> dict[str, Tensor]:
    """Read a reference checkpoint's state dict: safetensors, or a Lightning/PyTorch file
    loaded with ``weights_only=True`` (its ``state_dict`` entry when present)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_weights(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (or is not a file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} could not be read safely (weights_only=True): {error}. It may be "
            "truncated (copy it again), or need unpickling: re-save its state_dict with "
            "safetensors where it was trained"
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return state
