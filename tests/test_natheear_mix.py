"""natheear_tasks.simulation.mix: convolution, fades, SNR scaling and scene mixing."""

import numpy as np
import pytest
import torch

from natheear_tasks.simulation.mix import (
    fade,
    fft_convolve,
    fft_length,
    mix_scene,
    mix_scene_spectra,
    rir_spectrum,
    scale_noise_to_snr,
    scene_kernels,
)


def _energy_snr_db(source: torch.Tensor, noise: torch.Tensor, active=None) -> np.ndarray:
    w = 1.0 if active is None else active[:, None, :].double()
    es = (source.double() ** 2 * w).sum(dim=(1, 2))
    en = (noise.double() ** 2 * w).sum(dim=(1, 2))
    return (10 * torch.log10(es / en)).numpy()


def test_fft_convolve_matches_numpy_and_broadcasts():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((3, 500))
    rir = rng.standard_normal((3, 4, 120))
    out = fft_convolve(torch.tensor(signal), torch.tensor(rir))
    assert out.shape == (3, 4, 500) and out.dtype == torch.float64
    for b in range(3):
        for c in range(4):
            expected = np.convolve(signal[b], rir[b, c])[:500]
            np.testing.assert_allclose(out[b, c], expected, atol=1e-9)
    # one RIR set for the whole batch, and one signal for many RIR sets
    shared = fft_convolve(torch.tensor(signal, dtype=torch.float32), torch.tensor(rir[0]).float())
    np.testing.assert_allclose(shared[2, 1], np.convolve(signal[2], rir[0, 1])[:500], atol=1e-4)
    many = fft_convolve(torch.tensor(signal[0]), torch.tensor(rir))
    assert many.shape == (3, 4, 500)
    np.testing.assert_allclose(many[1, 3], np.convolve(signal[0], rir[1, 3])[:500], atol=1e-9)


def test_fft_convolve_with_a_delayed_impulse_delays_the_signal():
    x = torch.randn(2, 1000)
    rir = torch.zeros(2, 2, 64)
    rir[:, 0, 0] = 1.0
    rir[:, 1, 37] = 0.5
    out = fft_convolve(x, rir)
    torch.testing.assert_close(out[:, 0], x, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1, 37:], 0.5 * x[:, :-37], atol=1e-5, rtol=0)
    assert out[:, 1, :37].abs().max() < 1e-5


def test_fade_ramps_both_ends_and_keeps_the_middle():
    x = torch.ones(2, 3, 1000)
    y = fade(x, sample_rate=100, seconds=0.2)
    n = 20
    expected = torch.arange(1, n + 1) / (n + 1)
    torch.testing.assert_close(y[0, 0, :n], expected)
    torch.testing.assert_close(y[1, 2, -n:], expected.flip(0))
    assert torch.all(y[..., n:-n] == 1)
    short = fade(torch.ones(10), sample_rate=100, seconds=0.2)
    assert short.max() < 1 and short[0] == short[-1] and short[4] == short[5]


def test_fade_follows_the_active_span():
    x = torch.ones(2, 400)
    active = torch.zeros(2, 400, dtype=torch.bool)
    active[0, 100:300] = True
    active[1] = True
    y = fade(x, sample_rate=100, seconds=0.1, active=active)
    assert torch.all(y[0, :100] == 0) and torch.all(y[0, 300:] == 0)
    torch.testing.assert_close(y[0, 100:110], torch.arange(1, 11) / 11.0)
    torch.testing.assert_close(y[0, 290:300], torch.arange(10, 0, -1) / 11.0)
    torch.testing.assert_close(y[1], fade(x[1], 100, 0.1))


@pytest.mark.parametrize("with_active", [False, True])
def test_scale_noise_to_snr_hits_the_target(with_active):
    torch.manual_seed(0)
    source = torch.randn(4, 2, 3000) * torch.tensor([0.1, 1.0, 3.0, 0.5])[:, None, None]
    noise = torch.randn(4, 2, 3000) * 7.0
    snr = torch.tensor([5.0, 12.5, 40.0, -3.0])
    active = None
    if with_active:
        active = torch.zeros(4, 3000, dtype=torch.bool)
        active[:, 500:2000] = True
        noise[:, :, 2000:] *= 100.0  # energy outside the span must not count
    scaled = scale_noise_to_snr(source, noise, snr, active)
    np.testing.assert_allclose(_energy_snr_db(source, scaled, active), snr.numpy(), atol=1e-3)


def test_scale_noise_to_snr_silent_noise_stays_silent():
    out = scale_noise_to_snr(torch.randn(2, 2, 100), torch.zeros(2, 2, 100), torch.tensor([5.0, 5]))
    assert torch.all(out == 0) and torch.isfinite(out).all()


def test_mix_scene_is_source_plus_noise_at_the_target_snr():
    torch.manual_seed(1)
    b, k, c, length, t, sr = 3, 5, 4, 256, 4000, 1000
    dry = torch.randn(b, t)
    source_rir = torch.randn(b, c, length) * torch.exp(-torch.arange(length) / 40.0)
    noise = torch.randn(b, t)
    noise_rirs = torch.randn(b, k, c, length) * torch.exp(-torch.arange(length) / 40.0)
    mask = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    snr = torch.tensor([5.0, 20.0, 40.0])
    mixture = mix_scene(dry, source_rir, noise, noise_rirs, mask, snr, sr)
    assert mixture.shape == (b, c, t)

    source = fft_convolve(dry, source_rir)
    faded = fade(noise, sr)
    per_rir = fft_convolve(faded[:, None, :], noise_rirs)  # (B, K, C, T)
    spatial_noise = (per_rir * mask[:, :, None, None]).sum(1)
    np.testing.assert_allclose(_energy_snr_db(source, mixture - source), snr.numpy(), atol=0.01)
    # the added noise is the faded noise through the real RIRs only, scaled
    residual = mixture - source
    gain = (residual * spatial_noise).sum((1, 2)) / (spatial_noise**2).sum((1, 2))
    torch.testing.assert_close(residual, spatial_noise * gain[:, None, None], atol=2e-4, rtol=0)
    # padded rows do not matter
    garbage = noise_rirs.clone()
    garbage[~mask] = 1e3
    again = mix_scene(dry, source_rir, noise, garbage, mask, snr, sr)
    torch.testing.assert_close(again, mixture, atol=1e-4, rtol=1e-4)


def test_mix_scene_measures_snr_over_the_active_span():
    torch.manual_seed(2)
    b, t, sr = 2, 3000, 1000
    dry = torch.randn(b, t)
    rir = torch.zeros(b, 2, 10)
    rir[:, :, 0] = 1.0
    active = torch.zeros(b, t, dtype=torch.bool)
    active[:, 1000:2000] = True
    noise = torch.randn(b, t) * active
    mask = torch.ones(b, 1, dtype=torch.bool)
    snr = torch.tensor([10.0, 30.0])
    mixture = mix_scene(dry, rir, noise, rir[:, None], mask, snr, sr, active=active)
    source = fft_convolve(dry, rir)
    np.testing.assert_allclose(_energy_snr_db(source, mixture - source, active), snr, atol=0.01)
    torch.testing.assert_close(mixture[:, :, :1000], source[:, :, :1000], atol=1e-5, rtol=0)


def test_clips_of_one_scene_share_its_spectra():
    torch.manual_seed(4)
    b, k, c, length, t, sr = 3, 3, 2, 200, 2500, 1000
    source_rir = torch.randn(1, c, length) * torch.exp(-torch.arange(length) / 30.0)
    noise_rirs = torch.randn(1, k, c, length)
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    kernels = scene_kernels(source_rir, noise_rirs, mask)
    assert kernels.shape == (1, 2, c, length)
    torch.testing.assert_close(kernels[:, 1], noise_rirs[:, 0] + noise_rirs[:, 1])
    n = fft_length(t, length)
    assert n >= t + length - 1
    spectra = rir_spectrum(kernels, n)
    dry, noise, snr = torch.randn(b, t), torch.randn(b, t), torch.tensor([5.0, 15.0, 30.0])
    shared = mix_scene_spectra(dry, noise, spectra, n, snr, sr)
    assert shared.shape == (b, c, t)
    for i in range(b):  # each clip as if mixed alone with its scene
        one = slice(i, i + 1)
        alone = mix_scene(dry[one], source_rir, noise[one], noise_rirs, mask, snr[one], sr)
        torch.testing.assert_close(shared[one], alone, atol=1e-5, rtol=1e-5)


def test_mix_scene_keeps_float64_and_handles_silent_noise():
    dry = torch.randn(1, 800, dtype=torch.float64)
    rir = torch.randn(1, 2, 50, dtype=torch.float64)
    out = mix_scene(
        dry,
        rir,
        torch.zeros(1, 800, dtype=torch.float64),
        rir[:, None],
        torch.ones(1, 1, dtype=torch.bool),
        torch.tensor([10.0]),
        16000,
    )
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, fft_convolve(dry, rir))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mix_scene_on_cuda_matches_cpu():
    torch.manual_seed(3)
    args = (
        torch.randn(2, 3000),
        torch.randn(2, 4, 300),
        torch.randn(2, 3000),
        torch.randn(2, 3, 4, 300),
        torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool),
        torch.tensor([10.0, 25.0]),
    )
    cpu = mix_scene(*args, 16000)
    gpu = mix_scene(*(a.cuda() for a in args), 16000)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
