"""The same bits with 1 and 2 intra-op threads where evaluation needs them: feature
normalisation and embeddings (a CPU reduction to one value per sample used to be split
across threads), and the seeds that name each probe."""

from functools import partial

import pytest
import torch

from hear_gram import features as feat
from hear_gram.gram import GramEncoder
from hear_gram.hear_api import HearModel
from natheear_tasks.evaluation import determinism

TINY = {"in_chans": 2, "patch_size": (16, 8), "embed_dim": 32, "depth": 1, "num_heads": 2}


def _with_threads(count: int, function):
    with determinism.intra_op_threads(count):
        return function()


def test_normalize_of_one_partial_chunk_is_thread_count_independent():
    # One 1-s clip is one chunk with 101 valid frames: its statistics reduce 51,200 values
    # to one, which torch used to split between the threads.
    # Whether the two roundings differ depends on the data, so several chunks are checked.
    for seed in range(3):
        x = torch.randn(1, 2, 128, 200, generator=torch.Generator().manual_seed(seed)) * 4 - 9
        for frames in (60, 101, 150, 199):
            valid = torch.tensor([frames])
            one, two = (_with_threads(n, partial(feat.normalize, x, valid)) for n in (1, 2))
            assert torch.equal(one, two), (seed, frames)
            expected = feat.normalize(x[..., :frames])
            torch.testing.assert_close(one[..., :frames], expected, atol=1e-5, rtol=0)


def test_scene_embeddings_are_thread_count_independent():
    torch.manual_seed(0)
    model = HearModel(GramEncoder(**TINY), "gram-binaural", {"features": "binaural"}, 16000)
    audio = torch.randn(6, 16000, 2, generator=torch.Generator().manual_seed(1)) * 0.1
    for clip in (audio, audio[:1], torch.cat([audio, audio], dim=1)):  # 1-s and 2-s clips
        one, two = (_with_threads(n, partial(model.scene_embeddings, clip)) for n in (1, 2))
        assert torch.equal(one, two)


def test_probe_seeds_name_what_they_train():
    conf = {"lr": 1e-3, "initialization": torch.nn.init.xavier_uniform_, "hidden_layers": 1}
    seed = determinism.probe_seed(42, "task", "model", "fold00", conf)
    assert 0 <= seed < 1 << 32
    assert seed == determinism.probe_seed(
        42, "task", "model", "fold00", dict(reversed(conf.items()))
    )
    others = [
        determinism.probe_seed(43, "task", "model", "fold00", conf),
        determinism.probe_seed(42, "other", "model", "fold00", conf),
        determinism.probe_seed(42, "task", "other", "fold00", conf),
        determinism.probe_seed(42, "task", "model", "fold01", conf),
        determinism.probe_seed(42, "task", "model", "fold00", {**conf, "lr": 1e-4}),
    ]
    assert len({seed, *others}) == 6
    # Functions by name, not by address (which changes from process to process).
    assert "xavier_uniform_" in determinism.conf_id(conf) and "0x" not in determinism.conf_id(conf)


def test_model_key_ignores_label_and_path_but_not_weights_or_options():
    key = determinism.model_key("hear_gram", "abc", "/a/ckpt", {"sample_rate": 16000})
    assert key == determinism.model_key("hear_gram", "abc", "/b/ckpt", {"sample_rate": 16000})
    assert key != determinism.model_key("hear_gram", "abd", "/a/ckpt", {"sample_rate": 16000})
    assert key != determinism.model_key("hear_gram", "abc", "/a/ckpt", {"sample_rate": 48000})
    assert determinism.model_key("m", None, "random", {}) != determinism.model_key(
        "m", None, None, {}
    )


@pytest.mark.parametrize("count", [1, 3])
def test_probe_threads_pins_and_restores(count):
    before = torch.get_num_threads()
    with determinism.intra_op_threads(count):
        assert torch.get_num_threads() == count
        with determinism.probe_threads():
            assert torch.get_num_threads() == determinism.PROBE_THREADS
        assert torch.get_num_threads() == count
    assert torch.get_num_threads() == before
