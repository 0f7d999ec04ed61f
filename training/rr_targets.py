"""Representation-regularization targets: one vector per training clip from a frozen external
encoder, named by a spec string (``cat.rr_targets`` in a config, ``--rr-targets`` on the
command line):

* ``beside`` or ``beside:SUFFIX``: precomputed, stored beside the audio. Clip ``a/x.flac``
  has its vector in ``a/x.SUFFIX`` (default ``rr.npy``: a 1-D float ``.npy``); in webdataset
  shards it is the member ``KEY.SUFFIX`` of the clip's sample. Write them with any encoder
  (CLAP, BEATs, ...) before training.
* ``MODULE:CKPT``: any HEAR module and the ``model_file_path`` its ``load_model`` takes
  (``hear_gram.gram_binaural:exported/gram-binaural``). Its scene embedding of each clip (the
  clip as read, before scene mixing, mono, resampled to the module's rate) is computed on
  the training device the first time the clip is seen, and cached as one ``.npy`` per clip
  in a cache folder, so later epochs and resumed runs read it back.

Targets describe the clip, so every crop and masked clone of a clip shares its clip's vector.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

from hear_gram.atomic import temp_file
from hear_gram.audio import RESAMPLER
from hear_gram.features import SAMPLE_RATE

BESIDE = "beside"
DEFAULT_SUFFIX = "rr.npy"


class TargetError(ValueError):
    """A target spec, file or module that cannot be used."""


@dataclass(frozen=True)
class TargetSpec:
    """A parsed spec: ``kind`` is ``"beside"`` (with ``suffix``) or ``"hear"`` (with
    ``module`` and ``checkpoint``)."""

    kind: str
    suffix: str = DEFAULT_SUFFIX
    module: str = ""
    checkpoint: str = ""


def parse_spec(spec: str) -> TargetSpec:
    """Parse ``beside[:SUFFIX]`` or ``MODULE:CKPT``."""
    head, sep, tail = spec.partition(":")
    if head == BESIDE:
        suffix = tail.lstrip(".") if sep else DEFAULT_SUFFIX
        if not suffix.endswith(".npy"):
            raise TargetError(f"stored targets are .npy files; got suffix {suffix!r}")
        return TargetSpec(BESIDE, suffix=suffix)
    if not sep or not head or not tail:
        raise TargetError(
            f"--rr-targets {spec!r} is neither 'beside[:SUFFIX]' nor 'MODULE:CKPT' "
            "(e.g. hear_gram.gram_binaural:exported/gram-binaural)"
        )
    return TargetSpec("hear", module=head, checkpoint=tail)


def read_target(data: bytes | str | Path, what: str) -> np.ndarray:
    """A stored target: a finite 1-D float ``.npy`` (bytes or a path) as float32.

    Raises:
        TargetError: unreadable, not 1-D, or not finite; the message names ``what``.
    """
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        vector = np.load(source, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise TargetError(f"cannot read the regularization target of {what}: {error}") from None
    if vector.ndim != 1 or not np.issubdtype(vector.dtype, np.floating):
        raise TargetError(
            f"the regularization target of {what} has shape {vector.shape} and dtype "
            f"{vector.dtype}; expected a 1-D float vector"
        )
    if not np.isfinite(vector).all():
        raise TargetError(f"the regularization target of {what} is not finite")
    return vector.astype(np.float32)


def target_path(audio_path: str | Path, suffix: str = DEFAULT_SUFFIX) -> Path:
    """Where a stored target lies: ``a/x.flac`` -> ``a/x.SUFFIX``."""
    path = Path(audio_path)
    return path.with_name(f"{path.name.rsplit('.', 1)[0]}.{suffix}")


class HearTargets:
    """Scene embeddings of a frozen HEAR module, cached per clip on disk.

    Args:
        module: importable HEAR module name.
        checkpoint: its ``model_file_path``.
        cache_dir: folder of cached vectors (created when missing).
        device: where the module runs.
    """

    def __init__(
        self, module: str, checkpoint: str, cache_dir: str | Path, device: torch.device | str
    ) -> None:
        try:
            self.module = importlib.import_module(module)
        except ImportError as error:
            raise TargetError(f"cannot import HEAR module {module!r}: {error}") from None
        for name in ("load_model", "get_scene_embeddings"):
            if not hasattr(self.module, name):
                raise TargetError(f"{module} is not a HEAR module: it has no {name}()")
        self.model = self.module.load_model(checkpoint).to(device).eval()
        self.model.requires_grad_(False)
        self.device = torch.device(device)
        self.sample_rate = int(self.model.sample_rate)
        self.dim = int(self.model.scene_embedding_size)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.computed = 0

    def _cache_file(self, key: str) -> Path:
        return self.cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"

    def _store(self, key: str, vector: np.ndarray) -> None:
        fd, tmp = temp_file(self.cache_dir, ".", ".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, vector)
            os.replace(tmp, self._cache_file(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __call__(self, keys: list[str], clips: Tensor) -> Tensor:
        """Targets of clips ``(B, T)`` at 32 kHz named by unique ``keys``: ``(B, dim)``
        float32 on the module's device."""
        vectors: list[np.ndarray | None] = []
        for key in keys:
            cached = self._cache_file(key)
            vectors.append(read_target(cached, key) if cached.exists() else None)
        missing = [i for i, v in enumerate(vectors) if v is None]
        if missing:
            audio = clips[missing].to(self.device, torch.float32)
            if self.sample_rate != SAMPLE_RATE:
                audio = AF.resample(audio, SAMPLE_RATE, self.sample_rate, **RESAMPLER)
            # fp32 whatever the loop's autocast: cached targets do not depend on precision.
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                embeddings = self.module.get_scene_embeddings(audio, self.model)
            embeddings = embeddings.float().cpu().numpy()
            if embeddings.shape != (len(missing), self.dim):
                raise TargetError(
                    f"{self.module.__name__} returned scene embeddings of shape "
                    f"{embeddings.shape}, expected ({len(missing)}, {self.dim})"
                )
            for i, vector in zip(missing, embeddings, strict=True):
                self._store(keys[i], vector)
                vectors[i] = vector
            self.computed += len(missing)
        return torch.from_numpy(np.stack(vectors)).to(self.device)
