"""The log-mel baseline HEAR module: shapes, timestamps and the mono channel rule."""

import pytest
import torch

from hear_gram import features as feat
from natheear_tasks.baselines import logmel


def test_embeddings_shapes_and_timestamps():
    model = logmel.load_model(sample_rate=16000)
    audio = torch.randn(3, 16000) * 0.1  # 1 s: 100 log-mel frames, 25 steps of 40 ms
    steps, times = logmel.get_timestamp_embeddings(audio, model)
    assert steps.shape == (3, 25, model.timestamp_embedding_size)
    assert times.shape == (3, 25)
    assert times[0, :3].tolist() == pytest.approx([15.0, 55.0, 95.0])  # centres of 4 frames
    scene = logmel.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size) and scene.dtype == torch.float32
    # The scene mean is the mean of the 10-ms log-mel frames.
    frames = feat.compute_features(model.resample(audio)[:, None], "mono")[:, 0]
    assert torch.allclose(scene[:, :128], frames.mean(-1), atol=1e-4)


def test_channels_are_mixed_to_mono():
    model = logmel.load_model(sample_rate=16000)
    left, right = torch.randn(2, 1, 8000) * 0.1
    stereo = torch.stack([left[0], right[0]], dim=-1)[None]  # heareval's (B, T, C) layout
    mono = (left + right) / 2
    assert torch.allclose(
        logmel.get_scene_embeddings(stereo, model), logmel.get_scene_embeddings(mono, model)
    )
    ambix = torch.randn(1, 4, 8000) * 0.1
    assert torch.allclose(
        logmel.get_scene_embeddings(ambix, model), logmel.get_scene_embeddings(ambix[:, 0], model)
    )


def test_no_weights_accepted():
    with pytest.raises(ValueError, match="no weights"):
        logmel.load_model("some/checkpoint")
