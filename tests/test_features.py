"""GRAM features against torchaudio's own transforms, and their batching and streaming."""

import math

import pytest
import torch
import torchaudio

from hear_gram import features as feat


def reference_melspec() -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=32000,
        n_fft=1024,
        win_length=1024,
        hop_length=320,
        f_min=50.0,
        f_max=16000.0,
        n_mels=128,
        mel_scale="htk",
        norm=None,
        center=True,
        pad_mode="reflect",
        power=2.0,
    )


@pytest.mark.parametrize("samples", [32000, 64000, 50000, 1100])
def test_log_mel_matches_torchaudio(samples):
    torch.manual_seed(0)
    wave = torch.randn(3, 2, samples) * 0.1
    ours = feat.compute_features(wave, "binaural")
    expected = torch.log(reference_melspec()(wave) + 1e-5)
    assert ours.shape == (3, 2, 128, math.ceil(samples / 320))
    # torchaudio keeps floor(T / hop) + 1 frames; we keep those centred inside the audio.
    torch.testing.assert_close(ours, expected[..., : ours.shape[-1]], rtol=1e-4, atol=1e-4)


def test_two_seconds_is_200_frames_and_ten_seconds_1000():
    assert feat.num_frames(64000) == 200
    assert feat.num_frames(320000) == 1000
    assert feat.num_frames(64001) == 201


def test_ambisonics_features_match_torchaudio_spectrogram():
    torch.manual_seed(1)
    wave = torch.randn(2, 4, 20000) * 0.1
    ours = feat.compute_features(wave, "ambisonics")
    spec = torchaudio.transforms.Spectrogram(
        n_fft=1024, hop_length=320, center=True, pad_mode="reflect", power=None
    )(wave)[..., : ours.shape[-1]]
    fb = torchaudio.functional.melscale_fbanks(513, 50.0, 16000.0, 128, 32000, None, "htk")
    power = spec.abs() ** 2
    logmel = torch.log(torch.einsum("bcfn,fm->bcmn", power, fb) + 1e-6)
    active = 2 * (spec[:, :1].conj() * spec[:, 1:]).real
    iv = active / (1e-6 + power.sum(dim=1, keepdim=True))
    iv_mel = torch.einsum("bcfn,fm->bcmn", iv, fb)
    assert ours.shape == (2, 7, 128, ours.shape[-1])
    torch.testing.assert_close(ours[:, :4], logmel, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[:, 4:], iv_mel, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("azimuth,elevation", [(0, 0), (90, 0), (-135, 20), (30, -40)])
def test_intensity_vectors_point_at_a_plane_wave(azimuth, elevation):
    """An AmbiX plane wave (W, Y, Z, X gains) gives IV channels proportional to (Y, Z, X)."""
    az, el = math.radians(azimuth), math.radians(elevation)
    gains = torch.tensor(
        [1.0, math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)]
    )
    torch.manual_seed(2)
    source = torch.randn(32000) * 0.1
    iv = feat.compute_features(gains[:, None] * source, "ambisonics")[4:]
    y, z, x = iv.sum(dim=(1, 2))
    assert math.degrees(math.atan2(y, x)) == pytest.approx(azimuth, abs=0.5)
    assert math.degrees(math.atan2(z, math.hypot(x, y))) == pytest.approx(elevation, abs=0.5)


def test_features_of_any_frame_run_equal_the_whole():
    torch.manual_seed(3)
    wave = torch.randn(2, 48000)
    whole = feat.compute_features(wave, "binaural")
    padded = feat.pad_for_frames(wave)
    window, fb = feat.analysis_window(), feat.mel_filterbank()
    for first, stop in [(0, 37), (37, 120), (120, whole.shape[-1])]:
        part = feat.features_from_padded(
            padded[..., feat.frame_slice(first, stop)], "binaural", window, fb
        )
        torch.testing.assert_close(part, whole[..., first:stop], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,channels", [("binaural", 2), ("ambisonics", 4)])
def test_loud_audio_scaled_by_a_power_of_two_gives_its_float64_features(kind, channels):
    """Peak 1e30: the power overflows float32. Scaled down by 2^-k with log2_gain k, the
    features equal the unscaled audio's computed in float64, digital silence included."""
    wave = torch.randn(channels, 16000, generator=torch.Generator().manual_seed(5)) * 1e30
    wave[:, 4000:9000] = 0
    k = feat.safe_gain_exponent(wave.abs().max().item())
    assert k > 0 and feat.safe_gain_exponent(1.0) == feat.safe_gain_exponent(1e12) == 0
    padded = feat.pad_for_frames(wave)
    window, fb = feat.analysis_window(), feat.mel_filterbank()
    got = feat.features_from_padded(padded * 2.0**-k, kind, window, fb, log2_gain=k)
    f64 = torch.float64
    expected = feat.features_from_padded(
        padded.to(f64), kind, feat.analysis_window(dtype=f64), feat.mel_filterbank(dtype=f64)
    )
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-4)


def test_batched_equals_one_by_one():
    torch.manual_seed(4)
    wave = torch.randn(3, 4, 16000)
    batched = feat.compute_features(wave, "ambisonics")
    for i in range(3):
        torch.testing.assert_close(batched[i], feat.compute_features(wave[i], "ambisonics"))


def test_wrong_channel_count_is_an_error():
    with pytest.raises(ValueError, match="ambisonics features need 4 audio channels"):
        feat.compute_features(torch.randn(2, 16000), "ambisonics")


def test_normalize_full_is_layer_norm_without_affine():
    x = torch.randn(3, 2, 128, 200) * 4 + 7
    out = feat.normalize(x)
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(x, (2, 128, 200), eps=1e-5))
    assert out.mean().abs() < 1e-5


def test_normalize_ignores_padded_frames():
    x = torch.randn(2, 2, 128, 200) * 3 + 1
    valid = torch.tensor([200, 60])
    garbage = x.clone()
    garbage[1, ..., 60:] = 1e4
    out = feat.normalize(garbage, valid)
    torch.testing.assert_close(out[0], feat.normalize(x[:1])[0])
    expected = torch.nn.functional.layer_norm(x[1, ..., :60], (2, 128, 60), eps=1e-5)
    torch.testing.assert_close(out[1, ..., :60], expected)
    assert torch.all(out[1, ..., 60:] == 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_features_on_gpu_match_cpu():
    wave = torch.randn(2, 4, 32000)
    cpu = feat.compute_features(wave, "ambisonics")
    gpu = feat.compute_features(wave.cuda(), "ambisonics").cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
