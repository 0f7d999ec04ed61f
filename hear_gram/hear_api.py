"""The HEAR API (``load_model``, ``get_scene_embeddings``, ``get_timestamp_embeddings``)
over any hear_gram encoder variant.

Data flow: audio (checked, channels adapted, resampled to 32 kHz) -> features -> 2-s chunks
-> encoder -> per-step embeddings (timestamp embeddings) and their mean over time (scene
embeddings), or the duration-weighted mean of the chunks' CLS tokens.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from hear_gram import cpu
from hear_gram import features as feat
from hear_gram.audio import adapt_channels, check_audio, resample_span, resampled_length
from hear_gram.checkpoint import load_encoder
from hear_gram.chunking import ChunkOutputs, embed_files, step_timestamps
from hear_gram.variants import get_variant

DEFAULT_SAMPLE_RATE = 48000
SCENE_MODES = ("mean", "cls")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


class HearModel(nn.Module):
    """An encoder with its feature pipeline and the attributes HEAR asks for.

    Attributes:
        sample_rate: rate of the audio this model takes (resampled to 32 kHz inside).
        scene_embedding_size: width of scene embeddings.
        timestamp_embedding_size: width of timestamp embeddings.
    """

    def __init__(
        self,
        encoder: nn.Module,
        variant: str,
        config: dict,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        scene_embedding: str = "mean",
        precision: str = "fp32",
        batch_chunks: int = 16,
    ) -> None:
        super().__init__()
        if scene_embedding not in SCENE_MODES:
            raise ValueError(
                f"scene_embedding must be one of {SCENE_MODES}, got {scene_embedding!r}"
            )
        if scene_embedding == "cls" and getattr(encoder, "causal", False):
            raise ValueError(
                f"scene_embedding='cls' cannot be used with {variant}: its trunk is causal and "
                "the CLS token comes first, so it sees no audio (every clip would get the same "
                "vector); use scene_embedding='mean'"
            )
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if int(sample_rate) != sample_rate or sample_rate < 8000:
            raise ValueError(f"sample_rate must be an integer rate >= 8000 Hz, got {sample_rate!r}")
        if int(batch_chunks) != batch_chunks or batch_chunks < 1:
            raise ValueError(f"batch_chunks must be a positive integer, got {batch_chunks!r}")
        self.encoder = encoder.eval().to(PRECISIONS[precision])
        self.variant = variant
        self.config = config
        self.kind = config["features"]
        self.sample_rate = int(sample_rate)
        self.scene_embedding = scene_embedding
        self.precision = precision
        self.batch_chunks = int(batch_chunks)
        self.timestamp_embedding_size = int(encoder.frame_dim)
        self.scene_embedding_size = (
            self.timestamp_embedding_size if scene_embedding == "mean" else int(encoder.embed_dim)
        )
        self.bf16_checked = False
        self.register_buffer("window", feat.analysis_window(), persistent=False)
        self.register_buffer("mel_fb", feat.mel_filterbank(), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _check_bf16_speed(self) -> None:
        """Warn, once, when bf16 runs on a CPU where bfloat16 matmuls are not faster than
        float32 ones (measured: :func:`hear_gram.cpu.matmul_rates`)."""
        if self.precision != "bf16" or self.window.device.type != "cpu" or self.bf16_checked:
            return
        self.bf16_checked = True
        if not cpu.fast_bf16():
            fp32, bf16 = cpu.matmul_rates()
            warnings.warn(
                f"precision='bf16' on this CPU ({cpu.cpu_name()}) is slow: its bfloat16 "
                f"matmuls run at {bf16:.1f} GFLOP/s on one thread against {fp32:.1f} in "
                "float32 (measured now), so the encoder runs slower than in float32. "
                "Pass precision='fp32' (the default) here: faster, and as accurate. "
                "Continuing in bf16 as asked.",
                stacklevel=5,
            )

    def _outputs(self, audio: Tensor, keep_steps: bool) -> ChunkOutputs:
        self._check_bf16_speed()
        audio = check_audio(audio, self.sample_rate).to(self.window.device)
        audio = adapt_channels(audio, self.kind)
        rate = self.sample_rate
        # Files too loud for a float32 power are scaled down by a power of two (exact) and
        # their features computed as those of the unscaled file.
        peaks = torch.maximum(audio.amax(dim=(1, 2)), -audio.amin(dim=(1, 2)))
        gains = [feat.safe_gain_exponent(peak) for peak in peaks.tolist()]
        readers = [
            partial(resample_span, wave * 2.0**-gain if gain else wave, rate, feat.SAMPLE_RATE)
            for wave, gain in zip(audio, gains, strict=True)
        ]
        with torch.inference_mode():
            return embed_files(
                self.encoder,
                readers,
                resampled_length(audio.shape[-1], rate, feat.SAMPLE_RATE),
                self.kind,
                self.window,
                self.mel_fb,
                self.batch_chunks,
                keep_steps,
                gains,
            )

    def timestamp_embeddings(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, S, timestamp_embedding_size)`` embeddings and ``(B, S)`` times in ms."""
        embeddings = self._outputs(audio, keep_steps=True).steps
        times = step_timestamps(
            embeddings.shape[1], self.encoder.frames_per_step, embeddings.device
        )
        return embeddings, times.expand(embeddings.shape[0], -1).contiguous()

    def scene_embeddings(self, audio: Tensor) -> Tensor:
        """``(B, scene_embedding_size)``: mean over time of the step embeddings, or the
        chunks' CLS tokens weighted by their valid duration."""
        outputs = self._outputs(audio, keep_steps=False)
        return outputs.cls_mean if self.scene_embedding == "cls" else outputs.step_mean


def load_model(variant: str, model_file_path: str = "", **options: object) -> HearModel:
    """Load ``variant`` for the HEAR API.

    Args:
        variant: a name from :data:`hear_gram.variants.VARIANTS`.
        model_file_path: checkpoint folder, ``.safetensors`` file, Hub reference
            ``org/name[@revision]``, or ``"random"``; empty for the variant's released
            weights.
        **options: as heareval's ``--model-options`` passes them: ``sample_rate`` (default
            48000; resampled to 32 kHz inside), ``scene_embedding`` (``"mean"`` or
            ``"cls"``), ``precision`` (``"fp32"``, or ``"bf16"``: encoder weights and
            activations in bfloat16, features and outputs in float32; the first embedding
            call on a CPU without fast bfloat16 matmuls, see :func:`hear_gram.cpu.fast_bf16`,
            warns that fp32 is faster there, and goes on in bf16),
            ``batch_chunks`` (2-s chunks per encoder call, default 16).
    """
    accepted = {"sample_rate", "scene_embedding", "precision", "batch_chunks"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(f"unknown load_model options {unknown}; accepted: {sorted(accepted)}")
    ref = model_file_path or get_variant(variant)["hub"]
    if not ref:
        raise ValueError(
            f"{variant} has no released weights; pass a checkpoint folder, .safetensors file, "
            "Hub reference or 'random' as model_file_path"
        )
    encoder, config = load_encoder(str(ref), variant)
    return HearModel(encoder, variant, config, **options)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """HEAR timestamp embeddings: ``(B, S, E)`` float32 and ``(B, S)`` centres in ms."""
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """HEAR scene embeddings: ``(B, scene_embedding_size)`` float32."""
    return model.scene_embeddings(audio)


def variant_module_api(variant: str) -> tuple[Callable, Callable, Callable]:
    """The three functions of ``variant``'s HEAR module: ``load_model(model_file_path="",
    **options)``, ``get_scene_embeddings`` and ``get_timestamp_embeddings``."""
    get_variant(variant)

    def load_variant(model_file_path: str = "", **options) -> HearModel:
        return load_model(variant, model_file_path, **options)

    load_variant.__name__ = load_variant.__qualname__ = "load_model"
    load_variant.__doc__ = (
        f"Load {variant} for the HEAR API; see :func:`hear_gram.hear_api.load_model`."
    )
    return load_variant, get_scene_embeddings, get_timestamp_embeddings
