"""Pretraining configuration: dataclasses with the paper's defaults, YAML files, overrides.

A config file is YAML with the sections below (any field left out keeps its default)::

    model:  {variant, embed_dim, depth, num_heads, mlp_ratio, decoder_dim, decoder_depth,
             decoder_windows, decoder_mlp_ratio, mask_ratio}
    mamba:  {d_state, d_conv, expand, headdim, ngroups, norm, chunk_size}
    cat:    {stem_dims, stem_depths, decoder_dim, decoder_depth, decoder_kernel,
             decoder_groups, clones, mask_block, top_k, utterance_weight, ema_start, ema_end,
             ema_anneal_steps, rr_targets, rr_weight, rr_layer, rr_loss}
    data:   {train, clip_seconds, loudness_dbfs, num_workers, max_bad_fraction}
    scenes: {rirs, noise, snr_db, clean_ratio}
    optim:  {lr, min_lr, warmup_steps, betas, weight_decay, grad_clip}
    train:  {steps, batch_clips, crops_per_clip, accum_steps, seed, precision, compile,
             device, log_every, checkpoint_every, keep_checkpoints, tensorboard}

Overrides name a field by ``section.field`` and give a YAML value: ``optim.lr=1e-4``,
``scenes.snr_db=[5,40]``, ``scenes.noise=null``. Values are converted to the field's type
(``1e-4`` is a float for a float field, although YAML alone reads it as a string).

``model.variant`` picks the model family through hear_gram's registry: a ``gram-*`` variant
trains GRAM-T (the ``model.decoder_*`` fields describe its multi-window decoder), a
``gram-m-*`` variant trains GRAM-M (the same decoder and loss; its Mamba-2 blocks are
described by ``mamba``, and ``model.num_heads`` and ``model.mlp_ratio`` do not apply), a
``cat-*`` variant trains CAT (its CNN decoder, EMA teacher and regularization are in
``cat``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hear_gram.variants import VARIANTS
from training.rr_targets import TargetError, parse_spec


@dataclass
class ModelConfig:
    """Encoder (a hear_gram variant) and the multi-window MAE decoder."""

    variant: str = "gram-binaural"  # fixes the features, input channels and patch size
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_windows: list[int] = field(default_factory=lambda: [2, 5, 10, 25, 50, 100, 0, 0])
    decoder_mlp_ratio: float = 4.0
    mask_ratio: float = 0.8


@dataclass
class MambaConfig:
    """GRAM-M's Mamba-2 blocks (``model.variant`` gram-m-*): mamba_ssm's Mamba2 defaults."""

    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    norm: str = "layernorm"  # layernorm | rmsnorm (block norms and the final norm)
    chunk_size: int = 256  # tokens per chunk of the scan (its quadratic part)


@dataclass
class CatConfig:
    """CAT pretraining (``model.variant`` cat-*): stem, CNN decoder, masking, EMA teacher and
    representation regularization (see training.cat and training.rr_targets)."""

    stem_dims: list[int] = field(default_factory=lambda: [256, 384])
    stem_depths: list[int] = field(default_factory=lambda: [2, 2])
    decoder_dim: int = 768
    decoder_depth: int = 6
    decoder_kernel: int = 3
    decoder_groups: int = 16
    clones: int = 4  # masked copies of each sample the student encodes
    mask_block: int = 5  # side of the kept blocks of inverse block masking
    top_k: int = 0  # teacher blocks averaged into the targets; 0 = all
    utterance_weight: float = 1.0
    ema_start: float = 0.9998
    ema_end: float = 0.99999
    ema_anneal_steps: int = 100_000
    rr_targets: str | None = None  # beside[:SUFFIX] or MODULE:CKPT (--rr-targets); None = off
    rr_weight: float = 1.0
    rr_layer: int = -1  # student block whose CLS token is regularized; -1 = final output
    rr_loss: str = "mse"  # mse | cosine | l1


@dataclass
class DataConfig:
    """Training clips: webdataset shards, a folder, or a manifest (see training.data)."""

    train: str = ""
    clip_seconds: float = 10.0
    loudness_dbfs: float = -14.0
    num_workers: int = 8
    max_bad_fraction: float = 0.01


@dataclass
class SceneConfig:
    """Online naturalistic mixing (see training.scenes)."""

    rirs: str | None = None  # an RIR bank (natheear_tasks or the GRAM release)
    noise: str | None = None  # noise recordings (folder, manifest, shards) or "synthetic"
    snr_db: list[float] = field(default_factory=lambda: [5.0, 40.0])
    clean_ratio: float = 0.0


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay."""

    lr: float = 2e-4
    min_lr: float = 0.0
    warmup_steps: int = 10_000
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.01
    grad_clip: float = 5.0


@dataclass
class TrainConfig:
    """The loop: batch, precision, devices, logging and checkpoints."""

    steps: int = 500_000
    batch_clips: int = 96  # clips per optimiser step over all ranks
    crops_per_clip: int = 16  # 2-s crops taken from each clip: 96 x 16 = 1536 samples
    accum_steps: int = 1  # micro-batches per step on each rank
    seed: int = 0
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 100
    checkpoint_every: int = 25_000
    keep_checkpoints: int = 3  # the newest N step checkpoints are kept; 0 keeps all
    tensorboard: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    mamba: MambaConfig = field(default_factory=MambaConfig)
    cat: CatConfig = field(default_factory=CatConfig)
    data: DataConfig = field(default_factory=DataConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ConfigError(ValueError):
    """A config file or override that names an unknown field or has a wrong value."""


def _coerce(value: object, hint: object, name: str) -> object:
    """Convert a YAML value to the type ``hint`` of field ``name``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, name)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if hint is str:
        if value is None or isinstance(value, list | dict):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {hint!r} for {name}")


def _section(config: Config, name: str) -> object:
    if name not in {f.name for f in dataclasses.fields(Config)}:
        known = [f.name for f in dataclasses.fields(Config)]
        raise ConfigError(f"unknown config section {name!r}; sections: {known}")
    return getattr(config, name)


def set_field(config: Config, key: str, value: object) -> None:
    """Set ``section.field`` of ``config`` to ``value`` (converted to the field's type)."""
    section_name, _, field_name = key.partition(".")
    section = _section(config, section_name)
    hints = typing.get_type_hints(type(section))
    if field_name not in hints:
        raise ConfigError(
            f"unknown config field {key!r}; fields of {section_name}: {sorted(hints)}"
        )
    setattr(section, field_name, _coerce(value, hints[field_name], key))


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` strings (values parsed as YAML) to ``config``."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({error})") from None
        set_field(config, key.strip(), value)
    return config


def from_dict(raw: dict) -> Config:
    """A :class:`Config` from nested dicts (sections of fields); unknown names are errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    config = Config()
    for section_name, fields in raw.items():
        _section(config, section_name)
        if not isinstance(fields, dict):
            raise ConfigError(f"config section {section_name!r} must be a mapping of fields")
        for field_name, value in fields.items():
            set_field(config, f"{section_name}.{field_name}", value)
    return config


def to_dict(config: Config) -> dict:
    """The config as nested dicts, sections then fields."""
    return dataclasses.asdict(config)


def load(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (defaults when ``path`` is None), apply overrides and validate."""
    raw = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from None
    config = apply_overrides(from_dict(raw), list(overrides))
    validate(config)
    return config


def dump(config: Config, path: str | Path) -> None:
    """Write the config as YAML to ``path``."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def differences(a: Config, b: Config) -> list[str]:
    """``section.field: a -> b`` for every field that differs."""
    out = []
    for section, fields in to_dict(a).items():
        other = to_dict(b)[section]
        out += [f"{section}.{k}: {v!r} -> {other[k]!r}" for k, v in fields.items() if other[k] != v]
    return out


def validate(config: Config) -> None:
    """Check values that are wrong whatever the machine (paths are checked when opened)."""
    m, t, o, s = config.model, config.train, config.optim, config.scenes
    if m.variant not in VARIANTS:
        raise ConfigError(f"model.variant {m.variant!r} is not one of {sorted(VARIANTS)}")
    architecture = VARIANTS[m.variant]["architecture"]
    if m.embed_dim % 4 or (architecture != "gram-m" and m.embed_dim % m.num_heads):
        raise ConfigError("model.embed_dim must be divisible by model.num_heads and by 4")
    if architecture == "gram-m":
        validate_mamba(config.mamba, m.embed_dim)
    if architecture == "cat":
        validate_cat(config.cat, m.embed_dim, m.depth)
    elif config.cat.rr_targets is not None:
        raise ConfigError(
            f"cat.rr_targets (--rr-targets) regularizes CAT models; {m.variant} is not one"
        )
    elif m.decoder_dim % len(m.decoder_windows) or m.decoder_dim % 4:
        raise ConfigError(
            "model.decoder_dim must be divisible by 4 and by the number of decoder heads "
            f"(one per entry of model.decoder_windows, {len(m.decoder_windows)})"
        )
    if not 0.0 < m.mask_ratio < 1.0:
        raise ConfigError(f"model.mask_ratio must be in (0, 1), got {m.mask_ratio}")
    if len(s.snr_db) != 2 or s.snr_db[0] > s.snr_db[1]:
        raise ConfigError(f"scenes.snr_db must be [low, high], got {s.snr_db}")
    if not 0.0 <= s.clean_ratio <= 1.0:
        raise ConfigError(f"scenes.clean_ratio must be in [0, 1], got {s.clean_ratio}")
    if o.lr <= 0 or not 0 <= o.min_lr <= o.lr:
        raise ConfigError(
            f"optim.lr must be > 0 and optim.min_lr in [0, lr]; got {o.lr}, {o.min_lr}"
        )
    if len(o.betas) != 2:
        raise ConfigError(f"optim.betas must be [beta1, beta2], got {o.betas}")
    if t.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be auto, bf16 or fp32, got {t.precision!r}")
    if t.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda, got {t.device!r}")
    for name in ("steps", "batch_clips", "crops_per_clip", "accum_steps", "log_every"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1")
    if t.checkpoint_every < 1 or t.keep_checkpoints < 0 or o.warmup_steps < 0:
        raise ConfigError(
            "train.checkpoint_every must be >= 1, train.keep_checkpoints and "
            "optim.warmup_steps >= 0"
        )
    if not config.data.train:
        raise ConfigError("data.train is empty: give webdataset shards, a folder or a manifest")
    if s.clean_ratio < 1.0 and s.rirs is None:
        raise ConfigError(
            "scenes.rirs is not set but scenes.clean_ratio < 1: spatial scenes need an RIR "
            "bank (or set scenes.clean_ratio=1 for clean training)"
        )


def validate_mamba(c: MambaConfig, embed_dim: int) -> None:
    """Check the ``mamba`` section against the encoder's width."""
    if min(c.d_state, c.d_conv, c.expand, c.headdim, c.ngroups, c.chunk_size) < 1:
        raise ConfigError(
            "mamba sizes (d_state, d_conv, expand, headdim, ngroups, chunk_size) must be at least 1"
        )
    if (c.expand * embed_dim) % c.headdim or (c.expand * embed_dim // c.headdim) % c.ngroups:
        raise ConfigError(
            f"mamba.headdim {c.headdim} must divide the inner width mamba.expand x "
            f"model.embed_dim = {c.expand * embed_dim}, and mamba.ngroups the heads"
        )
    if c.norm not in ("layernorm", "rmsnorm"):
        raise ConfigError(f"mamba.norm must be layernorm or rmsnorm, got {c.norm!r}")


def validate_cat(c: CatConfig, embed_dim: int, depth: int) -> None:
    """Check the ``cat`` section against the encoder's width and depth."""
    if len(c.stem_dims) != 2 or len(c.stem_depths) != 2 or min(c.stem_dims) < 1:
        raise ConfigError("cat.stem_dims and cat.stem_depths need 2 entries (stages 1 and 2)")
    if c.decoder_dim % c.decoder_groups or embed_dim % c.decoder_groups:
        raise ConfigError("cat.decoder_groups must divide cat.decoder_dim and model.embed_dim")
    if c.decoder_kernel % 2 == 0 or c.mask_block % 2 == 0:
        raise ConfigError("cat.decoder_kernel and cat.mask_block must be odd")
    if c.clones < 1 or c.decoder_depth < 1:
        raise ConfigError("cat.clones and cat.decoder_depth must be at least 1")
    if not 0 <= c.top_k <= depth:
        raise ConfigError(f"cat.top_k must be in [0, model.depth={depth}] (0: all blocks)")
    if not 0.0 < c.ema_start <= c.ema_end < 1.0 or c.ema_anneal_steps < 0:
        raise ConfigError(
            "cat.ema_start <= cat.ema_end must lie in (0, 1) and cat.ema_anneal_steps >= 0"
        )
    if not -1 <= c.rr_layer < depth:
        raise ConfigError(f"cat.rr_layer must be -1 (final output) or in [0, {depth})")
    if c.rr_loss not in ("mse", "cosine", "l1"):
        raise ConfigError(f"cat.rr_loss must be mse, cosine or l1, got {c.rr_loss!r}")
    if c.rr_targets is not None:
        try:
            parse_spec(c.rr_targets)
        except TargetError as error:
            raise ConfigError(f"cat.rr_targets: {error}") from None
