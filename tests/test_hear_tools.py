"""hear_gram through the HEAR tools themselves: hear-validator and heareval's embeddings runner."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hear_tasks import write_task

from hear_gram.checkpoint import save_checkpoint
from hear_gram.variants import create_encoder, get_variant

pytestmark = pytest.mark.slow
SMALL = {
    "gram": {"embed_dim": 32, "depth": 1, "num_heads": 2},
    "gram-m": {"embed_dim": 32, "depth": 1, "d_state": 8, "headdim": 16},
}


def small_checkpoint(folder: Path, variant: str) -> Path:
    architecture = get_variant(variant)["architecture"]
    args = {**get_variant(variant)["encoder"], **SMALL[architecture]}
    encoder = create_encoder(architecture, args, seed=0)
    return save_checkpoint(folder / variant, encoder, variant, args)


def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize(
    "module,variant",
    [
        ("hear_gram", "gram-binaural"),
        ("hear_gram.gram_binaural", "gram-binaural"),
        ("hear_gram.gram_binaural_time", "gram-binaural-time"),
        ("hear_gram.gram_ambisonics", "gram-ambisonics"),
        ("hear_gram.gram_clean", "gram-clean"),
        ("hear_gram.gram_m_binaural", "gram-m-binaural"),
        ("hear_gram.gram_m_binaural_time", "gram-m-binaural-time"),
        ("hear_gram.gram_m_ambisonics", "gram-m-ambisonics"),
    ],
)
def test_validator_passes_every_variant(tmp_path, bin_dir, module, variant):
    ckpt = small_checkpoint(tmp_path, variant)
    out = run([str(bin_dir / "hear-validator"), module, "-m", str(ckpt)], tmp_path)
    assert "Looks good!" in out


def test_validator_passes_vit_base_random_weights(tmp_path, bin_dir):
    out = run([str(bin_dir / "hear-validator"), "hear_gram", "-m", "random"], tmp_path)
    assert "Looks good!" in out and "timestamp_embedding_size: 6144" in out


def test_embeddings_runner_on_mono_stereo_and_ambisonics_tasks(tmp_path):
    tasks = tmp_path / "tasks"
    write_task(tasks, "mono-scene", "scene", channels=1, seconds=1.0)
    write_task(tasks, "mono-event", "event", channels=1, seconds=2.5)
    write_task(tasks, "stereo-scene", "scene", channels=2, seconds=1.0)
    ambi_tasks = tmp_path / "ambi_tasks"
    write_task(ambi_tasks, "ambix-scene", "scene", channels=4, seconds=1.5)
    runner = [sys.executable, "-m", "heareval.embeddings.runner"]
    options = ["--model-options", json.dumps({"sample_rate": 16000})]
    binaural = small_checkpoint(tmp_path, "gram-binaural")
    run(
        [*runner, "hear_gram", "--model", str(binaural), "--tasks-dir", str(tasks), *options],
        tmp_path,
    )
    ambisonics = small_checkpoint(tmp_path, "gram-ambisonics")
    run(
        [
            *runner,
            "hear_gram.gram_ambisonics",
            "--model",
            str(ambisonics),
            "--tasks-dir",
            str(ambi_tasks),
            *options,
        ],
        tmp_path,
    )
    out = tmp_path / "embeddings"
    binaural_out = out / "hear_gram-sample-rate=16000"
    for task in ("mono-scene", "stereo-scene"):
        emb = np.load(binaural_out / task / "test" / "test0.wav.embedding.npy")
        assert emb.shape == (8 * 32,) and emb.dtype == np.float32
    event = binaural_out / "mono-event" / "test"
    emb = np.load(event / "test0.wav.embedding.npy")
    times = json.loads((event / "test0.wav.timestamps.json").read_text())
    assert emb.shape == (32, 8 * 32) and len(times) == 32
    np.testing.assert_allclose(times, 35.0 + 80.0 * np.arange(32))
    ambi_out = out / "hear_gram.gram_ambisonics-sample-rate=16000" / "ambix-scene"
    ambi = np.load(ambi_out / "train" / "train0.wav.embedding.npy")
    assert ambi.shape == (8 * 32,) and np.isfinite(ambi).all()
    for name in ("mono-scene", "mono-event", "stereo-scene"):
        assert (binaural_out / name / ".done.embeddings").exists()


def test_embeddings_runner_on_gram_m_with_stereo_and_ambisonics_tasks(tmp_path):
    tasks, ambi_tasks = tmp_path / "tasks", tmp_path / "ambi_tasks"
    write_task(tasks, "stereo-event", "event", channels=2, seconds=2.5)
    write_task(ambi_tasks, "ambix-scene", "scene", channels=4, seconds=1.5)
    runner = [sys.executable, "-m", "heareval.embeddings.runner"]
    options = ["--model-options", json.dumps({"sample_rate": 16000})]
    for module, variant, folder in (
        ("hear_gram.gram_m_binaural", "gram-m-binaural", tasks),
        ("hear_gram.gram_m_ambisonics", "gram-m-ambisonics", ambi_tasks),
    ):
        ckpt = small_checkpoint(tmp_path, variant)
        run([*runner, module, "--model", str(ckpt), "--tasks-dir", str(folder), *options], tmp_path)
    out = tmp_path / "embeddings"
    event = out / "hear_gram.gram_m_binaural-sample-rate=16000" / "stereo-event" / "test"
    emb = np.load(event / "test0.wav.embedding.npy")
    times = json.loads((event / "test0.wav.timestamps.json").read_text())
    assert emb.shape == (32, 8 * 32) and np.isfinite(emb).all()
    np.testing.assert_allclose(times, 35.0 + 80.0 * np.arange(32))
    ambi = out / "hear_gram.gram_m_ambisonics-sample-rate=16000" / "ambix-scene" / "train"
    emb = np.load(ambi / "train0.wav.embedding.npy")
    assert emb.shape == (8 * 32,) and np.isfinite(emb).all()
