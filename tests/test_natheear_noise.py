"""natheear_tasks.simulation.noise: synthesized noise and noise recordings."""

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from natheear_tasks.simulation.noise import NoiseError, NoiseFolder, SynthesizedNoise


def test_synthesized_noise_has_its_spectral_slope_and_unit_level():
    clips, record = SynthesizedNoise().draw(np.random.default_rng(3), {16000: 32000, 48000: 96000})
    assert {r: c.shape for r, c in clips.items()} == {16000: (32000,), 48000: (96000,)}
    assert all(c.dtype == np.float32 for c in clips.values())
    np.testing.assert_allclose(np.sqrt(np.mean(clips[48000].astype(float) ** 2)), 1, rtol=1e-3)
    f, power = welch(clips[48000], 48000, nperseg=4096)
    band = (f > 100) & (f < 10000)
    slope = np.polyfit(np.log10(f[band]), 10 * np.log10(power[band]), 1)[0]
    assert abs(slope + 10 * record["spectral_slope"]) < 1.5, (slope, record)

    # the 16-kHz clip is the 48-kHz one resampled: the same noise at every rate
    def below_7k(x, rate):  # band-limit to 7 kHz and sample at 16 kHz, through the FFT
        spectrum = np.fft.rfft(x)[: int(7000 * len(x) / rate)]
        return np.fft.irfft(spectrum, len(x) * 16000 // rate)

    a, b = below_7k(clips[48000], 48000), below_7k(clips[16000], 16000)
    assert np.corrcoef(a[1000:-1000], b[1000:-1000])[0, 1] > 0.95
    again, _ = SynthesizedNoise().draw(np.random.default_rng(3), {16000: 32000, 48000: 96000})
    assert np.array_equal(again[16000], clips[16000])


def test_synthesized_noise_is_gaussian():
    # Gaussian noise has a complex Gaussian spectrum: once the 1/f^beta shape is divided
    # out, the power of each bin is exponentially distributed (std / mean = 1); a spectrum
    # of fixed magnitude with random phases (not Gaussian) would give about 0.
    rng = np.random.default_rng(7)
    for _ in range(4):
        clips, record = SynthesizedNoise().draw(rng, {16000: 64000})
        freqs = np.fft.rfftfreq(64000, 1 / 16000)
        band = (freqs > 200) & (freqs < 6000)
        power = np.abs(np.fft.rfft(clips[16000].astype(np.float64))[band]) ** 2
        white = power * freqs[band] ** record["spectral_slope"]
        assert 0.9 < white.std() / white.mean() < 1.1, record
        assert abs(np.mean(white < np.median(white)) - 0.5) < 0.01
        assert abs(np.median(white) / white.mean() - np.log(2)) < 0.05  # exponential


def test_noise_folder_loops_short_recordings_and_resamples(tmp_path):
    tone = np.sin(2 * np.pi * 100 * np.arange(800) / 8000).astype(np.float32)
    sf.write(tmp_path / "short.wav", tone, 8000)
    folder = NoiseFolder(tmp_path)
    clips, record = folder.draw(np.random.default_rng(0), {16000: 16000})
    assert record["file"] == "short.wav" and clips[16000].shape == (16000,)
    # 1 s from a looped 0.1-s 100-Hz tone: still a clean 100-Hz tone everywhere
    spectrum = np.abs(np.fft.rfft(clips[16000][200:-200]))
    assert abs(np.argmax(spectrum) * 16000 / len(spectrum) / 2 - 100) < 3
    assert folder.describe()["files"] == 1


def test_noise_folder_refuses_empty_or_broken_folders(tmp_path):
    with pytest.raises(NoiseError, match="holds no"):
        NoiseFolder(tmp_path)
    (tmp_path / "broken.flac").write_bytes(b"xx")
    with pytest.raises(NoiseError, match="unreadable"):
        NoiseFolder(tmp_path)
    with pytest.raises(NoiseError, match="not a folder"):
        NoiseFolder(tmp_path / "missing")
