"""Checkpoints, cached targets, toy data sets, simulated SELD datasets and the SELD oracle's
output are created with the umask's permissions (readable by others under the usual 022),
not tempfile's private 0700/0600."""

import os
import stat

import pytest
import torch
from torch import nn

from hear_gram.cat import CatEncoder
from hear_gram.checkpoint import save_checkpoint
from hear_gram.gram import GramEncoder
from natheear_tasks.baselines.seld_oracle import run_oracle
from natheear_tasks.simulation.recordings import Settings
from natheear_tasks.simulation.recordings import write_dataset as write_dataset_seld
from training import checkpointing
from training.rr_targets import HearTargets
from training.synthetic import write_dataset

SMALL = {"in_chans": 2, "patch_size": (16, 8), "embed_dim": 32, "depth": 1, "num_heads": 2}
TINY_CAT = {
    "in_chans": 2,
    "stem_dims": (8, 12),
    "stem_depths": (1, 1),
    "embed_dim": 16,
    "depth": 1,
    "num_heads": 2,
}


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def modes(root) -> dict[str, int]:
    """Permission bits of ``root`` and everything under it, by path relative to its parent."""
    found = {root.name: stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root.parent))] = stat.S_IMODE(path.stat().st_mode)
    return found


def expected(path, umask: int) -> int:
    return (0o777 if path.is_dir() else 0o666) & ~umask


def assert_umask_modes(root, umask: int) -> None:
    for name, mode in modes(root).items():
        path = root.parent / name
        assert mode == expected(path, umask), (name, oct(mode), oct(umask))


def test_hear_gram_checkpoint_folder(tmp_path, umask):
    folder = save_checkpoint(tmp_path / "ckpt", GramEncoder(**SMALL), "gram-binaural", SMALL)
    assert_umask_modes(folder, umask)


def test_training_checkpoint_folder(tmp_path, umask):
    path = checkpointing.save(tmp_path, 3, nn.Linear(2, 2), {}, [{}])
    assert_umask_modes(path, umask)
    assert_umask_modes(checkpointing.checkpoint_dir(tmp_path), umask)


def test_cached_regularization_targets(tmp_path, umask):
    os.umask(0o022)
    folder = save_checkpoint(tmp_path / "ext", CatEncoder(**TINY_CAT), "cat-binaural", TINY_CAT)
    os.umask(umask)
    targets = HearTargets("hear_gram.cat_binaural", str(folder), tmp_path / "cache", "cpu")
    targets(["clip"], torch.randn(1, 32000) * 0.1)
    assert_umask_modes(tmp_path / "cache", umask)


def test_toy_data_set(tmp_path, umask):
    data = write_dataset(tmp_path / "data", clips=2, shards=1, seconds=1.0, noise=1, scenes=1)
    assert_umask_modes(data, umask)


def test_simulated_seld_dataset_and_oracle_output(tmp_path, umask):
    # Both were built in a tempfile.mkdtemp folder (0700) and renamed into place.
    settings = Settings("frames", files=1, seconds=4.0, sample_rate=8000, seed=1)
    dataset = write_dataset_seld(tmp_path / "seld", settings)
    assert_umask_modes(dataset, umask)
    run_oracle(dataset, tmp_path / "oracle", "frames")
    assert_umask_modes(tmp_path / "oracle", umask)
