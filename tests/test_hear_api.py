"""The HEAR API: input layouts, channel adaptation, chunk aggregation, streaming, errors."""

import math
import os
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
import torchaudio

import hear_gram
import hear_gram.cpu
import hear_gram.gram_ambisonics
import hear_gram.gram_binaural_time
from hear_gram import features as feat
from hear_gram.audio import RESAMPLER, resample_span, resampled_length
from hear_gram.checkpoint import make_config
from hear_gram.chunking import embed_files, iter_chunks
from hear_gram.hear_api import HearModel
from hear_gram.variants import create_encoder, get_variant

SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def small_model(variant: str = "gram-binaural", **options) -> HearModel:
    args = {**get_variant(variant)["encoder"], **SMALL}
    encoder = create_encoder(get_variant(variant)["architecture"], args, seed=0)
    return HearModel(encoder, variant, make_config(variant, args), **options)


def slicer(wave: torch.Tensor):
    return lambda start, stop: wave[..., start:stop]


def tone(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    sig = [
        0.3 * torch.sin(2 * math.pi * (300 + 200 * c) * t) + 0.05 * torch.randn(len(t), generator=g)
        for c in range(channels)
    ]
    return torch.stack(sig)


def test_load_model_random_is_vit_base_in_eval_mode_with_validator_rate():
    model = hear_gram.load_model("random")
    assert not model.training and not model.encoder.training
    assert model.sample_rate == 48000
    assert model.scene_embedding_size == model.timestamp_embedding_size == 6144
    assert hear_gram.gram_binaural_time.load_model("random").timestamp_embedding_size == 768
    cls_model = hear_gram.gram_ambisonics.load_model("random", scene_embedding="cls")
    assert cls_model.scene_embedding_size == 768


def test_options_as_heareval_passes_them():
    model = small_model(sample_rate=16000, batch_chunks=3, precision="bf16")
    assert (model.sample_rate, model.batch_chunks, model.precision) == (16000, 3, "bf16")
    with pytest.raises(TypeError, match="unknown load_model options \\['colour'\\]"):
        hear_gram.load_model("random", colour="red")
    with pytest.raises(ValueError, match="scene_embedding must be one of"):
        small_model(scene_embedding="max")
    with pytest.raises(ValueError, match="precision must be one of"):
        small_model(precision="fp8")


def test_three_layouts_give_the_same_embeddings():
    model = small_model(sample_rate=16000)
    stereo = tone(1.5, 16000, channels=2)[None]
    first, times = hear_gram.get_timestamp_embeddings(stereo, model)
    second, _ = hear_gram.get_timestamp_embeddings(stereo.transpose(1, 2).contiguous(), model)
    torch.testing.assert_close(first, second)
    mono = tone(1.5, 16000)
    a = hear_gram.get_scene_embeddings(mono, model)
    b = hear_gram.get_scene_embeddings(mono[:, None], model)
    c = hear_gram.get_scene_embeddings(mono[:, :, None], model)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_channel_adaptation_rules():
    binaural = small_model(sample_rate=16000)
    mono = tone(1.0, 16000, seed=1)
    duplicated = mono.expand(2, -1)[None]
    torch.testing.assert_close(
        hear_gram.get_scene_embeddings(mono, binaural),
        hear_gram.get_scene_embeddings(duplicated, binaural),
    )
    ambix = tone(1.0, 16000, channels=4, seed=2)[None]
    w_only = ambix[:, :1].expand(-1, 2, -1)
    torch.testing.assert_close(
        hear_gram.get_scene_embeddings(ambix, binaural),
        hear_gram.get_scene_embeddings(w_only, binaural),
    )
    clean = small_model("gram-clean", sample_rate=16000)
    torch.testing.assert_close(
        hear_gram.get_scene_embeddings(ambix, clean),
        hear_gram.get_scene_embeddings(ambix[:, 0], clean),
    )
    stereo = tone(1.0, 16000, channels=2, seed=3)[None]
    torch.testing.assert_close(
        hear_gram.get_scene_embeddings(stereo, clean),
        hear_gram.get_scene_embeddings(stereo.mean(1), clean),
    )
    ambisonics = small_model("gram-ambisonics", sample_rate=16000)
    assert hear_gram.get_scene_embeddings(ambix, ambisonics).shape == (1, 8 * 32)
    torch.testing.assert_close(
        hear_gram.get_scene_embeddings(mono, ambisonics),
        hear_gram.get_scene_embeddings(mono.expand(4, -1)[None], ambisonics),
    )
    with pytest.raises(ValueError, match="no first-order Ambisonics equivalent"):
        hear_gram.get_scene_embeddings(stereo, ambisonics)


@pytest.mark.parametrize(
    "audio,error,match",
    [
        (torch.zeros(2, 0), ValueError, "empty|shorter than one analysis frame"),
        (torch.full((1, 16000), float("nan")), ValueError, "NaN or infinite"),
        (torch.zeros(1, 16000, dtype=torch.int16), TypeError, "dtype torch.int16"),
        (torch.zeros(1, 3, 16000), ValueError, "3 channels"),
        (torch.zeros(1, 16000, 6), ValueError, "6 channels"),
        (torch.zeros(1, 500), ValueError, "shorter than one analysis frame"),
        (torch.zeros(1, 4, 4), ValueError, "ambiguous"),
        (torch.zeros(16000), ValueError, "must be \\(batch, samples\\)"),
        (
            torch.full((1, 16000), 1e39, dtype=torch.float64),
            ValueError,
            "peak 1e\\+39 is beyond the float32 range",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(audio, error, match):
    model = small_model(sample_rate=16000)
    with pytest.raises(error, match=match):
        hear_gram.get_scene_embeddings(audio, model)


@pytest.mark.parametrize("variant,channels", [("gram-binaural", 2), ("gram-ambisonics", 4)])
@pytest.mark.parametrize("peak", [1e18, 3e38])
def test_loud_float_audio_gets_the_embeddings_of_its_float64_features(variant, channels, peak):
    """float32 audio whose power overflows float32 (peak 1e18, or near float32's maximum),
    digital silence included, gets the embeddings of its features computed in float64."""
    model = small_model(variant, sample_rate=32000)
    audio = tone(3.0, 32000, channels)
    audio[:, 32000:64000] = 0
    audio = (audio / audio.abs().max() * peak)[None]
    steps, _ = hear_gram.get_timestamp_embeddings(audio, model)
    f64 = torch.float64
    expected = embed_files(
        model.encoder,
        [slicer(audio[0].to(f64))],
        audio.shape[-1],
        model.kind,
        model.window.to(f64),
        model.mel_fb.to(f64),
        model.batch_chunks,
        keep_steps=True,
    ).steps
    assert torch.isfinite(steps).all()
    torch.testing.assert_close(steps, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seconds,steps", [(2.0, 25), (2.5, 32), (0.5, 7), (4.0, 50)])
def test_timestamps_are_regular_frame_centres(seconds, steps):
    model = small_model(sample_rate=16000)
    emb, times = hear_gram.get_timestamp_embeddings(tone(seconds, 16000).expand(3, -1), model)
    assert emb.shape == (3, steps, 8 * 32) and times.shape == (3, steps)
    assert emb.dtype == times.dtype == torch.float32
    torch.testing.assert_close(times[0], 35.0 + 80.0 * torch.arange(steps, dtype=torch.float32))
    time_model = small_model("gram-binaural-time", sample_rate=16000)
    _, fine = hear_gram.get_timestamp_embeddings(tone(seconds, 16000), time_model)
    torch.testing.assert_close(
        fine[0], 5.0 + 20.0 * torch.arange(math.ceil(seconds * 50), dtype=torch.float32)
    )


def test_scene_embedding_is_the_mean_over_time_and_cls_is_duration_weighted():
    model = small_model(sample_rate=16000)
    audio = tone(3.0, 16000, channels=2)[None]
    emb, _ = hear_gram.get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(hear_gram.get_scene_embeddings(audio, model), emb.mean(dim=1))
    cls_model = small_model(sample_rate=16000, scene_embedding="cls")
    wave = torchaudio.functional.resample(audio[0], 16000, 32000, **RESAMPLER)
    chunks, valid = next(
        iter_chunks(slicer(wave), 96000, "binaural", cls_model.window, cls_model.mel_fb, 200)
    )
    assert valid.tolist() == [200, 100]
    cls, _ = cls_model.encoder(chunks, torch.tensor([25, 13]))
    expected = (cls[0] * 200 + cls[1] * 100) / 300
    torch.testing.assert_close(hear_gram.get_scene_embeddings(audio, cls_model)[0], expected)


def test_streaming_equals_one_pass_and_batches_do_not_matter():
    """A 70-s file crosses feature segments (32 chunks); results do not depend on batching."""
    audio = tone(70.0, 16000, channels=2, seed=4)[None]
    small_batches = small_model(sample_rate=16000, batch_chunks=3)
    big_batches = small_model(sample_rate=16000, batch_chunks=64)
    a, _ = hear_gram.get_timestamp_embeddings(audio, small_batches)
    b, _ = hear_gram.get_timestamp_embeddings(audio, big_batches)
    assert a.shape == (1, 875, 8 * 32)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_streamed_chunks_equal_features_of_the_whole_resampled_file():
    """Chunks from spans resampled on demand equal the whole file's resampled features."""
    audio = tone(70.0, 16000, channels=2, seed=5)
    whole_wave = torchaudio.functional.resample(audio, 16000, 32000, **RESAMPLER)
    read = partial(resample_span, audio, 16000, 32000)
    model = small_model(sample_rate=16000)
    streamed = list(iter_chunks(read, 70 * 32000, "binaural", model.window, model.mel_fb, 200))
    assert [len(c) for c, _ in streamed] == [32, 3]
    chunks = torch.cat([c for c, _ in streamed])
    assert torch.cat([v for _, v in streamed]).tolist() == [200] * 35
    whole = feat.compute_features(whole_wave, "binaural")
    assert whole.shape[-1] == 7000
    expected = feat.normalize(whole.reshape(2, 128, 35, 200).permute(2, 0, 1, 3))
    torch.testing.assert_close(chunks, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000])
def test_resampled_spans_equal_the_whole_file_resampled(rate):
    x = torch.randn(2, 54321, generator=torch.Generator().manual_seed(rate))
    whole = torchaudio.functional.resample(x, rate, 32000, **RESAMPLER)
    assert whole.shape[-1] == resampled_length(54321, rate, 32000)
    for start, stop in [(0, 700), (699, 9000), (9000, 10**9), (whole.shape[-1] - 5, 10**9)]:
        torch.testing.assert_close(
            resample_span(x, rate, 32000, start, stop), whole[..., start:stop], rtol=0, atol=1e-6
        )


def test_files_in_a_batch_are_independent():
    model = small_model(sample_rate=16000, batch_chunks=5)
    batch = torch.stack([tone(3.0, 16000, 2, seed=s) for s in range(3)])
    together = hear_gram.get_scene_embeddings(batch, model)
    alone = torch.cat([hear_gram.get_scene_embeddings(batch[i : i + 1], model) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_input_sample_rate_is_resampled_to_32k():
    """Audio at 48 kHz embeds as the same audio resampled to 32 kHz by scipy's polyphase
    resampler (noise low-passed at 14 kHz, inside both resamplers' pass bands)."""
    rng = np.random.default_rng(0)
    taps = scipy.signal.firwin(255, 14000, fs=48000)
    noise48 = scipy.signal.lfilter(taps, 1.0, rng.standard_normal((2, 96000)) * 0.1)
    noise32 = scipy.signal.resample_poly(noise48, 2, 3, axis=-1)
    at48, at32 = small_model(sample_rate=48000), small_model(sample_rate=32000)
    ours = resample_span(torch.tensor(noise48, dtype=torch.float32), 48000, 32000, 0, 10**9)
    inner = slice(2000, -2000)
    error = (ours - torch.tensor(noise32, dtype=torch.float32))[:, inner]
    assert error.square().mean().sqrt() < 0.01 * float(np.std(noise32))
    a = hear_gram.get_scene_embeddings(torch.tensor(noise48, dtype=torch.float32)[None], at48)
    b = hear_gram.get_scene_embeddings(torch.tensor(noise32, dtype=torch.float32)[None], at32)
    assert torch.nn.functional.cosine_similarity(a, b).item() > 0.999


def test_bf16_precision_stays_close_to_fp32():
    audio = tone(2.0, 16000, 2)[None]
    fp32 = hear_gram.get_scene_embeddings(audio, small_model(sample_rate=16000))
    bf16 = hear_gram.get_scene_embeddings(audio, small_model(sample_rate=16000, precision="bf16"))
    assert bf16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(fp32, bf16).item() > 0.99


def test_bf16_on_a_cpu_where_it_is_slower_warns_once(monkeypatch):
    """Simulated as measured on an Intel AVX512-BF16 CPU without AMX, whose oneDNN flag says
    bfloat16 is supported (bf16 0.55x fp32): the first bf16 call warns with the rates and
    names the fix, the next calls and fp32 models do not, and bf16 goes on as asked."""
    monkeypatch.setattr(hear_gram.cpu, "matmul_rates", lambda: (140.0, 76.0))
    audio = tone(1.0, 16000, 2)[None]
    model = small_model(sample_rate=16000, precision="bf16")
    with pytest.warns(UserWarning, match=r"76.0 GFLOP/s .* against 140.0 .* precision='fp32'"):
        hear_gram.get_scene_embeddings(audio, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hear_gram.get_timestamp_embeddings(audio, model)
        hear_gram.get_scene_embeddings(audio, small_model(sample_rate=16000))
    assert model.encoder.blocks[0].attn.qkv.weight.dtype == torch.bfloat16


def test_fast_bf16_is_measured():
    """With oneDNN limited to AVX2 (the AVX2-only CPUs whose bf16 matmuls are tens of
    times slower than fp32) the measurement says no, and the warning comes."""
    code = (
        "import warnings, sys; sys.path.insert(0, 'tests')\n"
        "from hear_gram.cpu import fast_bf16; from test_hear_api import small_model, tone\n"
        "import hear_gram\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    model = small_model(sample_rate=16000, precision='bf16')\n"
        "    hear_gram.get_scene_embeddings(tone(1.0, 16000, 2)[None], model)\n"
        "print(fast_bf16(), sum('bf16' in str(w.message) for w in caught))\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "1"], result.stdout + result.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_gives_the_cpu_embeddings():
    audio = tone(3.0, 16000, 2)[None]
    model = small_model(sample_rate=16000)
    cpu = hear_gram.get_scene_embeddings(audio, model)
    gpu = hear_gram.get_scene_embeddings(audio.cuda(), model.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)


def test_long_files_stream_through_bounded_batches():
    model = small_model(sample_rate=16000, batch_chunks=4)
    sizes = []
    encoder_forward = model.encoder.forward

    def recording_forward(x, valid_steps=None):
        sizes.append(x.shape[0])
        return encoder_forward(x, valid_steps)

    model.encoder.forward = recording_forward
    emb, _ = hear_gram.get_timestamp_embeddings(tone(21.0, 16000, 2)[None].expand(2, -1, -1), model)
    assert emb.shape == (2, 263, 8 * 32)
    assert max(sizes) == 4 and sum(sizes) == 2 * 11
