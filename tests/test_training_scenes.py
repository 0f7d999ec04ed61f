"""Online scenes: sampling from RIR banks (ours and the GRAM release layout), batching, and
rendering on the device with natheear_tasks' mixing."""

import numpy as np
import pytest
import torch

from natheear_tasks.simulation.rirbank import RirBankWriter
from training.data import ClipStream, open_source
from training.scenes import SceneSampler, render
from training.synthetic import synth_rirs, write_noise, write_shards

SAMPLES = 80000


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    write_shards(root / "shards", 4, 2, 2.5, rng)
    write_noise(root / "noise", 3, 2.5, rng)
    writer = RirBankWriter(root / "binaural", "binaural", 32000, 3, {"test": True})
    writer.start()
    for i, rows in enumerate([2, 4, 2]):
        writer.write_scene(i, synth_rirs(rng, rows, 2, 2000 + 500 * i), {})
    writer.finalize()
    release = root / "gram-release"  # GRAM release layout: bare .npy scenes, 4 channels
    release.mkdir()
    for i in range(2):
        np.save(release / f"scene{i}.npy", synth_rirs(rng, 3, 4, 1500))
    return root


def batch(sampler: SceneSampler, root, clips: int = 3) -> dict:
    stream = ClipStream(open_source(str(root / "shards")), clips, SAMPLES, extras=sampler)
    return next(stream.batches(0))


def test_scene_batches_pad_rirs_and_carry_noise(material):
    sampler = SceneSampler(str(material / "binaural"), str(material / "noise"), (5, 40), 2)
    b = batch(sampler, material, clips=4)
    b_clips, k, c, length = b["noise_rirs"].shape
    assert (b_clips, c) == (4, 2) and b["source_rir"].shape == (4, 2, length)
    rows = b["noise_rir_mask"].sum(1)
    assert set(rows.tolist()) <= {1, 3} and k == rows.max()
    for n in range(4):  # padding rows are zero
        assert torch.all(b["noise_rirs"][n, rows[n] :] == 0)
    assert b["noise"].shape == (4, SAMPLES) and ((b["snr_db"] >= 5) & (b["snr_db"] <= 40)).all()
    assert (b["noise_length"] <= SAMPLES).all()


def test_render_mixes_scenes_and_copies_clean_batches(material):
    sampler = SceneSampler(str(material / "binaural"), str(material / "noise"), (5, 40), 2)
    b = batch(sampler, material)
    cpu = torch.device("cpu")
    clean = render(b, 2, True, cpu)
    assert clean.shape == (3, 2, SAMPLES) and torch.equal(clean[:, 0], clean[:, 1])
    torch.testing.assert_close(clean[:, 0], b["audio"])
    scene = render(b, 2, False, cpu)
    assert scene.shape == (3, 2, SAMPLES) and not torch.allclose(scene[:, 0], scene[:, 1])
    # Without noise the scene is the clip through the source RIR; the noise adds at the SNR.
    dry = render({k: v for k, v in b.items() if k != "noise"}, 2, False, cpu)
    noise = scene - dry
    snr = 10 * torch.log10(dry.square().sum((1, 2)) / noise.square().sum((1, 2)))
    active = b["noise_length"] == SAMPLES  # SNR measured over the whole clip for these
    assert active.any()
    torch.testing.assert_close(snr[active], b["snr_db"][active], atol=0.05, rtol=0)


def test_synthesized_noise_fills_the_clip_at_the_loudness(material):
    sampler = SceneSampler(str(material / "binaural"), "synthetic", (5, 40), 2)
    b = batch(sampler, material)
    assert (b["noise_length"] == SAMPLES).all()
    rms_db = 20 * torch.log10(b["noise"].square().mean(1).sqrt())
    torch.testing.assert_close(rms_db, torch.full((3,), -14.0), atol=0.01, rtol=0)
    assert not torch.allclose(b["noise"][0], b["noise"][1])
    assert render(b, 2, False, torch.device("cpu")).isfinite().all()


def test_gram_release_folder_is_a_bank_too(material):
    sampler = SceneSampler(str(material / "gram-release"), None, (5, 40), 4)
    b = batch(sampler, material, clips=2)
    assert b["source_rir"].shape[:2] == (2, 4) and "noise" not in b
    assert render(b, 4, False, torch.device("cpu")).shape == (2, 4, SAMPLES)


def test_banks_that_do_not_fit_are_refused(material, tmp_path):
    with pytest.raises(ValueError, match="2-channel RIRs but the model takes 4-channel"):
        SceneSampler(str(material / "binaural"), None, (5, 40), 4)
    writer = RirBankWriter(tmp_path / "48k", "binaural", 48000, 1, {})
    writer.start()
    writer.write_scene(0, np.zeros((2, 2, 10), np.float32), {})
    writer.finalize()
    with pytest.raises(ValueError, match="48000 Hz; GRAM trains at 32000 Hz"):
        SceneSampler(str(tmp_path / "48k"), None, (5, 40), 2)
    dry = tmp_path / "dry"  # scenes with a source RIR only
    dry.mkdir()
    np.save(dry / "scene.npy", np.zeros((1, 2, 10), np.float32))
    sampler = SceneSampler(str(dry), str(material / "noise"), (5, 40), 2)
    with pytest.raises(ValueError, match="has no noise RIRs, but scenes.noise is set"):
        batch(sampler, material)
