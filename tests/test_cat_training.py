"""CAT pretraining pieces: EMA teacher, inverse block masking, targets and losses,
representation regularization."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
from torch import nn

from hear_gram.audio import RESAMPLER
from hear_gram.cat import CatEncoder
from hear_gram.checkpoint import save_checkpoint
from hear_gram.variants import VARIANTS
from training import config as configuration
from training.cat import CatPretrainer, CnnDecoder, teacher_targets
from training.cat_masking import inverse_block_mask, keep_indices
from training.ema import ema_decay, ema_update, make_teacher
from training.families import family_of
from training.rr_targets import HearTargets, TargetError, parse_spec, read_target, target_path

TINY = {
    "in_chans": 2,
    "stem_dims": (8, 12),
    "stem_depths": (1, 1),
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
}
TINY_MODEL = {"decoder_dim": 16, "decoder_depth": 2, "decoder_groups": 4, "clones": 2}


def test_ema_decay_anneals_linearly_then_holds():
    assert ema_decay(0, 0.9, 0.99, 100) == 0.9
    assert ema_decay(50, 0.9, 0.99, 100) == pytest.approx(0.945)
    assert ema_decay(100, 0.9, 0.99, 100) == 0.99
    assert ema_decay(10_000, 0.9, 0.99, 100) == 0.99
    assert ema_decay(3, 0.9, 0.99, 0) == 0.99


def test_ema_update_arithmetic():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn_like(p))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student.train()(torch.randn(8, 3))  # moves the running statistics
    ema_update(teacher, student, 0.75)
    for name, param in student.named_parameters():
        expected = 0.75 * before[name] + 0.25 * param.detach()
        torch.testing.assert_close(teacher.state_dict()[name], expected)
    torch.testing.assert_close(teacher[1].running_mean, student[1].running_mean)


def test_inverse_block_mask_statistics():
    gen = torch.Generator().manual_seed(0)
    grid, n = (8, 25), 200
    mask = inverse_block_mask(2000, grid, 0.8, 5, generator=gen)
    assert mask.shape == (2000, n) and mask.dtype == torch.bool
    assert bool((mask.sum(dim=1) == 160).all())
    # Every position is masked sometimes and kept sometimes.
    rate = mask.float().mean(dim=0)
    assert 0.6 < rate.min() and rate.max() < 0.95
    # Kept tokens come in blocks: far more kept 4-neighbours than uniform random masking gives.
    random_mask = torch.rand(2000, n, generator=gen).argsort(dim=1) < 160

    def kept_neighbour_fraction(m):
        kept = ~m.view(-1, *grid)
        pad = nn.functional.pad(kept[:, None].float(), (1, 1, 1, 1))[:, 0]
        neighbours = pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
        return float((neighbours[kept] > 0).float().mean())

    assert kept_neighbour_fraction(mask) > 0.9
    assert kept_neighbour_fraction(random_mask) < 0.65
    # Seeded masks repeat; the visible indices are ascending and complete.
    again = inverse_block_mask(2000, grid, 0.8, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    keep = keep_indices(mask[:3])
    assert keep.shape == (3, 40) and bool((keep.diff(dim=1) > 0).all())
    assert not mask[:3].gather(1, keep).any()


def test_teacher_targets_are_normalised_per_token():
    layers = [torch.randn(2, 1 + 200, 16) * 5 + 3 for _ in range(3)]
    y = teacher_targets(layers)
    assert y.shape == (2, 200, 16)
    torch.testing.assert_close(y.mean(dim=-1), torch.zeros(2, 200), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=-1, unbiased=False), torch.ones(2, 200), atol=1e-3, rtol=0)
    # top_k = 1 uses the last block only.
    torch.testing.assert_close(teacher_targets(layers, 1), teacher_targets(layers[-1:]))


def test_cnn_decoder_shape():
    decoder = CnnDecoder(16, (8, 25), dim=32, depth=3, groups=8, out_dim=16)
    assert decoder(torch.randn(2, 200, 16)).shape == (2, 200, 16)


def test_pretrainer_step_trains_the_student_not_the_teacher():
    torch.manual_seed(0)
    model = CatPretrainer(TINY, **TINY_MODEL, ema_start=0.5, ema_end=0.5, ema_anneal_steps=1)
    loss, parts = model(torch.randn(3, 2, 128, 200))
    assert set(parts) == {"frame", "utterance"} and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())
    before = [p.clone() for p in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    assert model.update_teacher(0) == 0.5
    moved = [(a - b).abs().max() for a, b in zip(model.teacher.parameters(), before, strict=True)]
    assert all(m == pytest.approx(0.5, abs=1e-6) for m in moved)


@pytest.mark.parametrize("kind", ["mse", "cosine", "l1"])
def test_regularization_loss_falls_toward_a_fixed_target(kind):
    torch.manual_seed(0)
    small = {**TINY, "n_mels": 32, "chunk_frames": 48}  # a 2 x 6 token grid
    model = CatPretrainer(small, **TINY_MODEL, rr_dim=8, rr_loss=kind, rr_layer=0, rr_weight=10)
    x = torch.randn(2, 2, 32, 48)
    target = torch.randn(2, 8)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    history = []
    for _ in range(20):
        loss, parts = model(x, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(parts["rr"]))
    assert max(history[-3:]) < 0.5 * history[0], history


def test_regularization_needs_its_target():
    model = CatPretrainer(TINY, **TINY_MODEL, rr_dim=8)
    with pytest.raises(ValueError, match="rr_target"):
        model(torch.randn(1, 2, 128, 200))
    with pytest.raises(ValueError, match="rr_loss"):
        CatPretrainer(TINY, **TINY_MODEL, rr_dim=8, rr_loss="kl")


def test_target_specs_and_stored_targets(tmp_path):
    assert parse_spec("beside").suffix == "rr.npy"
    assert parse_spec("beside:clap.npy").suffix == "clap.npy"
    spec = parse_spec("hear_gram.gram_binaural:runs/x:y")
    assert (spec.kind, spec.module, spec.checkpoint) == (
        "hear",
        "hear_gram.gram_binaural",
        "runs/x:y",
    )
    with pytest.raises(TargetError, match="MODULE:CKPT"):
        parse_spec("hear_gram.gram_binaural")
    assert target_path("a/b/x.y.flac") == target_path("a/b/x.y.wav")
    assert target_path("a/b/x.y.flac").name == "x.y.rr.npy"
    good = tmp_path / "good.npy"
    np.save(good, np.arange(4, dtype=np.float64))
    assert read_target(good, "good").dtype == np.float32
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(TargetError, match="1-D"):
        read_target(bad, "bad")


def test_hear_targets_are_scene_embeddings_computed_once(tmp_path):
    folder = save_checkpoint(tmp_path / "ext", CatEncoder(**TINY), "cat-binaural", TINY)
    targets = HearTargets("hear_gram.cat_binaural", str(folder), tmp_path / "cache", "cpu")
    assert targets.dim == 128
    clips = torch.randn(2, 32000) * 0.1
    first = targets(["clip-a", "clip-b"], clips)
    assert first.shape == (2, 128) and targets.computed == 2
    expected = targets.module.get_scene_embeddings(
        torchaudio.functional.resample(clips, 32000, 48000, **RESAMPLER), targets.model
    )
    torch.testing.assert_close(first, expected, rtol=1e-4, atol=1e-5)
    # Cached: other audio under the same keys gives the stored vectors, nothing recomputed.
    again = targets(["clip-b", "clip-a"], torch.zeros(2, 32000))
    assert targets.computed == 2
    torch.testing.assert_close(again, first.flip(0))


CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.mark.parametrize(
    "name, variant, clean",
    [("cat_binaural", "cat-binaural", 0.0), ("cat_ambisonics", "cat-ambisonics", 0.0),
     ("cat_clean", "cat-clean", 1.0)],
)  # fmt: skip
def test_cat_configs_carry_the_reference_settings(name, variant, clean):
    cfg = configuration.load(CONFIGS / f"{name}.yaml")
    m, c, o, t = cfg.model, cfg.cat, cfg.optim, cfg.train
    assert (m.variant, cfg.scenes.clean_ratio, m.depth, m.mask_ratio) == (variant, clean, 11, 0.8)
    assert (c.decoder_dim, c.decoder_depth, c.decoder_kernel, c.decoder_groups) == (768, 6, 3, 16)
    assert (c.clones, c.mask_block, c.top_k, c.rr_targets) == (4, 5, 0, None)
    assert (c.ema_start, c.ema_end, c.ema_anneal_steps) == (0.9998, 0.99999, 100_000)
    assert (o.lr, o.weight_decay, o.betas, o.warmup_steps, o.grad_clip) == (
        5e-4,
        0.05,
        [0.9, 0.95],
        53_000,
        4.0,
    )
    assert t.steps == 400_000
    # Export writes exactly the named variant's encoder.
    args = family_of(cfg).encoder_args()
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()} == {
        k: v for k, v in VARIANTS[variant]["encoder"].items()
    }


@pytest.mark.parametrize(
    "override, message",
    [
        ("cat.decoder_groups=5", "decoder_groups"),
        ("cat.rr_layer=11", "rr_layer"),
        ("cat.rr_loss=kl", "rr_loss"),
        ("cat.top_k=12", "top_k"),
        ("cat.ema_start=0.9999999", "ema_start"),
        ("cat.rr_targets=nomodule", "MODULE:CKPT"),
    ],
)
def test_bad_cat_settings_are_named(override, message):
    with pytest.raises(configuration.ConfigError, match=message):
        configuration.load(CONFIGS / "cat_binaural.yaml", [override])
