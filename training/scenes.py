"""Online naturalistic scenes: draw each clip's scene in the data readers, mix on the device.

In the readers (:class:`SceneSampler`, per clip, seeded like the clip): a scene of the RIR
bank (row 0 the source RIR, the others noise RIRs), a noise clip and an SNR uniform in
``scenes.snr_db``. The noise is a recording from ``scenes.noise`` (a folder, manifest or
webdataset shards, read like the training clips: channel 0, 32 kHz, RMS -14 dBFS, a random
10-s window, or zero-padded and "active" only where it holds audio), or with
``scenes.noise: synthetic`` natheear_tasks' synthesized noise (coloured, slowly modulated
Gaussian noise) at -14 dBFS. A batch pads the RIRs to common lengths.

On the training device (:func:`render`), batched, with natheear_tasks' mixing code (the
same code that builds Nat-HEAR tasks): the clip convolved with the source RIR, plus the
noise with 0.2-s fades convolved with every noise RIR and summed, scaled to the SNR over
the span where the noise is active. A clean batch (probability ``scenes.clean_ratio``,
drawn by the loop) is the dry clip copied to every channel.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from hear_gram.features import SAMPLE_RATE
from natheear_tasks.simulation.mix import fft_convolve, mix_scene
from natheear_tasks.simulation.noise import SynthesizedNoise
from natheear_tasks.simulation.rirbank import RirBank, collate_scenes
from training.data import ClipIndex, decode_audio, open_source, prepare_clip

SYNTHETIC = "synthetic"


class SceneSampler:
    """Draws the scene of each clip (see the module docstring); a ``ClipExtras``."""

    def __init__(
        self,
        rirs: str,
        noise: str | None,
        snr_db: tuple[float, float],
        channels: int,
        loudness_dbfs: float = -14.0,
    ) -> None:
        self.rirs_path = rirs
        bank = RirBank.open(rirs)
        if bank.sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"RIR bank {rirs} is at {bank.sample_rate} Hz; GRAM trains at {SAMPLE_RATE} Hz: "
                "build or resample the bank at 32 kHz"
            )
        if bank.num_channels != channels:
            raise ValueError(
                f"RIR bank {rirs} has {bank.num_channels}-channel RIRs but the model takes "
                f"{channels}-channel audio: use a binaural bank for binaural models and a "
                "first-order Ambisonics bank for Ambisonics models"
            )
        if len(bank) == 0:
            raise ValueError(f"RIR bank {rirs} holds no scenes")
        self.num_scenes = len(bank)
        self.synthetic = noise == SYNTHETIC
        self.noise = ClipIndex(open_source(noise)) if noise and not self.synthetic else None
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.loudness_dbfs = loudness_dbfs
        self._bank: RirBank | None = None

    @property
    def bank(self) -> RirBank:
        # Opened on first use in each reader process.
        if self._bank is None:
            self._bank = RirBank.open(self.rirs_path)
        return self._bank

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_bank": None}

    def sample(self, rng: np.random.Generator, num_samples: int) -> dict:
        """One clip's scene: ``scene`` (a :class:`RirScene`) and, with a noise source,
        ``noise (T,)``, ``noise_length ()`` and ``snr_db ()``.

        Raises:
            BadClipError: the drawn noise recording cannot be decoded.
        """
        scene = self.bank[int(rng.integers(self.num_scenes))]
        item = {"scene": scene}
        if self.noise is not None or self.synthetic:
            if scene.num_noise == 0:
                raise ValueError(
                    f"a scene of RIR bank {self.rirs_path} has no noise RIRs, but scenes.noise "
                    "is set: use a bank with noise RIRs or set scenes.noise=null"
                )
            if self.synthetic:
                clips, _ = SynthesizedNoise().draw(rng, {SAMPLE_RATE: num_samples})
                gain = 10.0 ** (self.loudness_dbfs / 20.0)  # the clips have unit RMS
                noise, length = torch.from_numpy(clips[SAMPLE_RATE] * gain), num_samples
            else:
                samples, rate = decode_audio(*self.noise.read(int(rng.integers(len(self.noise)))))
                noise, length = prepare_clip(samples, rate, num_samples, self.loudness_dbfs, rng)
            item["noise"] = noise
            item["noise_length"] = torch.tensor(length)
            item["snr_db"] = torch.tensor(rng.uniform(*self.snr_db), dtype=torch.float32)
        return item

    def collate(self, items: list[dict]) -> dict[str, Tensor]:
        """Stack a batch with natheear_tasks' ``collate_scenes``: ``source_rir (B, C, L)``,
        ``noise_rirs (B, K, C, L)`` and ``noise_rir_mask (B, K)``, zero-padded to the longest
        RIR and the most noise RIRs of the batch."""
        scenes = [item["scene"] for item in items]
        rows = max(scene.num_noise for scene in scenes)
        source, noise_rirs, mask = collate_scenes(scenes, max_noise=rows)
        out = {
            "source_rir": torch.from_numpy(source),
            "noise_rirs": torch.from_numpy(noise_rirs),
            "noise_rir_mask": torch.from_numpy(mask),
        }
        for key in ("noise", "noise_length", "snr_db"):
            if key in items[0]:
                out[key] = torch.stack([item[key] for item in items])
        return out


def render(batch: dict, channels: int, clean: bool, device: torch.device) -> Tensor:
    """The audio a batch trains on, ``(B, channels, T)`` float32 on ``device``.

    Args:
        batch: a :class:`training.data.ClipStream` batch (with scenes unless every batch
            is clean).
        channels: audio channels of the model (1, 2 or 4).
        clean: dry audio copied to every channel instead of a scene.
    """
    audio = batch["audio"].to(device, non_blocking=True)
    if clean:
        return audio[:, None].expand(-1, channels, -1)
    source_rir = batch["source_rir"].to(device, non_blocking=True)
    if "noise" not in batch:
        return fft_convolve(audio, source_rir)
    noise = batch["noise"].to(device, non_blocking=True)
    samples = torch.arange(noise.shape[-1], device=device)
    active = samples[None, :] < batch["noise_length"].to(device)[:, None]
    return mix_scene(
        audio,
        source_rir,
        noise,
        batch["noise_rirs"].to(device, non_blocking=True),
        batch["noise_rir_mask"].to(device, non_blocking=True),
        batch["snr_db"].to(device, non_blocking=True),
        SAMPLE_RATE,
        active=active,
    )
