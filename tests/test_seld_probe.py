"""The SELD probe: ADPIT, multi-ACCDOA decoding, pooling to 100-ms frames, and a probe
that must learn directions and classes from embeddings that encode them linearly."""

import itertools
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from seld_task_files import seld_label, write_seld_task

from natheear_tasks.evaluation import determinism, seld_probe
from natheear_tasks.evaluation.seld_probe import (
    SeldSplit,
    adpit_loss,
    assignments,
    decode,
    pool_frames,
    targets,
)
from natheear_tasks.formats.dcase_frames import FrameRow, azimuth_elevation, direction_xyz
from natheear_tasks.formats.published import SeldFormat
from natheear_tasks.tasks import seld_folder


def _random_units(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, 3, generator=generator), dim=-1)


def _brute_force(output: torch.Tensor, sources: torch.Tensor, count: torch.Tensor) -> float:
    """ADPIT written out: every frame and class, every surjective track-to-source map."""
    losses = []
    for n, c in itertools.product(range(output.shape[0]), range(output.shape[2])):
        k = int(count[n, c])
        if k == 0:
            losses.append(output[n, :, c].square().mean().item())
            continue
        best = math.inf
        for mapping in itertools.product(range(k), repeat=3):
            if len(set(mapping)) == k:
                target = sources[n, c, list(mapping)]
                best = min(best, (output[n, :, c] - target).square().mean().item())
        losses.append(best)
    return float(np.mean(losses))


def test_adpit_candidates_follow_the_definition():
    assert assignments(1) == [(0, 0, 0)]
    assert len(assignments(2)) == 6 and (0, 0, 0) not in assignments(2)
    assert sorted(assignments(3)) == sorted(itertools.permutations(range(3)))


def test_adpit_equals_the_brute_force_minimum():
    g = torch.Generator().manual_seed(0)
    output = torch.rand(40, 3, 4, 3, generator=g) * 2 - 1
    count = torch.randint(0, 4, (40, 4), generator=g)
    sources = _random_units(g, 40, 4, 3) * (torch.arange(3) < count[..., None])[..., None]
    assert adpit_loss(output, sources, count).item() == pytest.approx(
        _brute_force(output, sources, count), rel=1e-6
    )


def test_adpit_is_permutation_invariant_and_needs_every_source():
    g = torch.Generator().manual_seed(1)
    sources = _random_units(g, 1, 1, 3)
    for k in (1, 2, 3):
        count = torch.tensor([[k]])
        present = sources * (torch.arange(3) < k)[:, None]
        for mapping in assignments(k):
            output = present[:, :, list(mapping)].permute(0, 2, 1, 3)  # (1, tracks, 1, 3)
            assert adpit_loss(output, present, count).item() == pytest.approx(0.0, abs=1e-7)
        output = torch.rand(1, 3, 1, 3, generator=g)
        shuffled = output[:, [2, 0, 1]]
        assert adpit_loss(output, present, count) == pytest.approx(
            adpit_loss(shuffled, present, count).item()
        )
    # two sources: giving every track the first one is not a candidate
    both = sources * (torch.arange(3) < 2)[:, None]
    first_only = both[:, :, [0, 0, 0]].permute(0, 2, 1, 3)
    assert adpit_loss(first_only, both, torch.tensor([[2]])).item() > 0.1
    # silence: the target of every track is 0
    output = torch.full((1, 3, 1, 3), 0.5)
    assert adpit_loss(output, torch.zeros(1, 1, 3, 3), torch.tensor([[0]])).item() == 0.25


def test_targets_keep_three_sources_per_class_and_frame():
    rows = [FrameRow(1, 0, s, 30.0 * s, 0.0) for s in range(4)] + [FrameRow(0, 1, 0, 90.0, 0.0)]
    sources, count = targets(rows, frames=2, num_classes=2)
    assert count.tolist() == [[0, 1], [3, 0]]
    assert sources[1, 0, 2].tolist() == pytest.approx(direction_xyz(60.0, 0.0).tolist())
    assert sources[0, 1, 0].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-7)


def test_decode_thresholds_and_unifies_close_tracks():
    output = torch.zeros(3, 3, 2, 3)
    a = torch.tensor(direction_xyz(0.0, 0.0)).float()
    near = torch.tensor(direction_xyz(10.0, 0.0)).float()
    far = torch.tensor(direction_xyz(90.0, 0.0)).float()
    output[0, 0, 0], output[0, 1, 0], output[0, 2, 0] = 0.9 * a, 0.8 * near, 0.7 * far
    output[1, 0, 1] = 0.4 * a  # below the activity threshold
    output[2, 0, 1] = 0.6 * far  # beyond the frames decoded
    rows = decode(output, frames=2)
    assert [(r.frame, r.cls, r.source) for r in rows] == [(0, 0, 0), (0, 0, 1)]
    assert rows[0].azimuth == pytest.approx(
        azimuth_elevation(0.9 * a.numpy() + 0.8 * near.numpy())[0], abs=1e-4
    )
    assert rows[1].azimuth == pytest.approx(90.0, abs=1e-4)
    assert len(decode(output, frames=3)) == 3


def test_pooling_means_the_steps_of_a_frame_and_interpolates_between_coarse_ones():
    steps = np.arange(40.0, 1000.0, 80.0)  # hear_gram's 80-ms steps: 1 or 2 per frame
    pooled = pool_frames(steps[:, None], steps, frames=10)
    expected = [np.mean([t for t in steps if 100 * k <= t < 100 * (k + 1)]) for k in range(10)]
    assert pooled[:, 0].tolist() == pytest.approx(expected)
    coarse = np.array([125.0, 375.0, 625.0])  # 250-ms steps
    pooled = pool_frames(np.stack([coarse, -coarse], 1), coarse, frames=10)
    # frames 1, 3, 6 hold a step; the others interpolate at their centres, ends held
    assert pooled[:, 0].tolist() == pytest.approx(
        [125, 125, 250, 375, 450, 550, 625, 625, 625, 625]
    )
    assert pooled[:, 1].tolist() == pytest.approx((-pooled[:, 0]).tolist())
    with pytest.raises(ValueError, match="increase"):
        pool_frames(np.zeros((2, 1)), np.array([10.0, 10.0]), 3)


FRAMES = 20
CLASSES = 2


def _synthetic_split(
    name: str, files: int, seed: int, informative: bool = True, dim: int = 16
) -> SeldSplit:
    """Chunks of 20 frames; each class is active in runs of frames with a random direction;
    embedding = fixed random linear map of [activity_c * direction_c per class] + noise
    (or pure noise when not ``informative``)."""
    g = np.random.default_rng(seed)
    mix = np.random.default_rng(0).standard_normal((CLASSES * 3, dim))
    xs, sources, counts, references = [], [], [], []
    for _ in range(files):
        rows = []
        for cls in range(CLASSES):
            start = int(g.integers(0, FRAMES - 6))
            end = start + int(g.integers(4, 10))
            azimuth = float(g.uniform(-180, 180))
            elevation = float(np.degrees(np.arcsin(g.uniform(-0.9, 0.9))))
            rows += [
                FrameRow(k, cls, 0, azimuth, elevation) for k in range(start, min(end, FRAMES))
            ]
        target, count = targets(rows, FRAMES, CLASSES)
        code = target[:, :, 0].reshape(FRAMES, -1).numpy()
        x = code @ mix if informative else np.zeros((FRAMES, dim))
        x = x + 0.05 * g.standard_normal((FRAMES, dim))
        xs.append(torch.from_numpy(x).float())
        sources.append(target)
        counts.append(count)
        references.append(rows)
    return SeldSplit(
        [f"{name}{i}.wav" for i in range(files)],
        torch.cat(xs),
        torch.cat(sources),
        torch.cat(counts),
        references,
        [FRAMES] * files,
        [FRAMES] * files,
    )


METADATA = {
    "task_name": "synthetic-seld",
    "split_mode": "trainvaltest",
    "splits": ["train", "valid", "test"],
    "classes": ["a", "b"],
    "evaluation_params": {
        "task_specific_param_grid": {
            "hidden_layers": [1],
            "hidden_dim": [64],
            "lr": [1e-2, 3e-3],
            "max_epochs": [120],
            "check_val_every_n_epoch": [10],
            "patience": [4],
            "batch_size": [256],
        }
    },
}


FORMAT = SeldFormat(["a", "b"], 100.0, 10, 20.0, "macro", True)


def _splits(informative: bool = True) -> dict[str, SeldSplit]:
    return {
        "train": _synthetic_split("train", 60, 1, informative),
        "valid": _synthetic_split("valid", 15, 2, informative),
        "test": _synthetic_split("test", 15, 3, informative),
    }


def test_the_probe_learns_classes_and_directions_encoded_linearly():
    scores = seld_probe.fit_and_score(_splits(), METADATA, FORMAT, "default", grid_points=2)
    test = scores["test"]
    assert test["LE_CD"] < 10 and test["ER20"] < 0.3 and test["F20"] > 0.8
    assert test["seld_score"] < 0.15 and test["files"] == 15
    assert set(scores["file_counts"]) == {f"test{i}.wav" for i in range(15)}
    assert scores["hparams"]["hidden_dim"] == 64
    blind = seld_probe.fit_and_score(_splits(False), METADATA, FORMAT, "default", grid_points=1)
    assert blind["test"]["seld_score"] > 0.5


def test_the_probe_is_deterministic_whatever_the_thread_count():
    splits = _splits()
    metadata = {
        **METADATA,
        "evaluation_params": {
            "task_specific_param_grid": {
                **METADATA["evaluation_params"]["task_specific_param_grid"],
                "max_epochs": [20],
            }
        },
    }
    with determinism.intra_op_threads(2):
        first = seld_probe.fit_and_score(splits, metadata, FORMAT, "default", 1, model="m")
    with determinism.intra_op_threads(1):
        second = seld_probe.fit_and_score(splits, metadata, FORMAT, "default", 1, model="m")
    assert first == second
    other = seld_probe.fit_and_score(splits, metadata, FORMAT, "default", 1, model="another")
    assert other["file_counts"] != first["file_counts"]


def _write_embeddings(root, files):
    """heareval's embeddings-runner output of a SELD task: per file ``.embedding.npy`` and
    ``.timestamps.json`` (80-ms steps)."""
    steps = np.arange(40.0, 100.0 * FRAMES, 80.0)
    for split, labels in files.items():
        (root / split).mkdir(parents=True)
        for name in labels:
            np.save(root / split / f"{name}.embedding.npy", np.zeros((len(steps), 4), np.float32))
            (root / split / f"{name}.timestamps.json").write_text(json.dumps(steps.tolist()))


def test_score_task_reads_heareval_output_and_scores_only_true_frames(tmp_path):
    grid = {"task_specific_param_grid": {"max_epochs": [3], "check_val_every_n_epoch": [1]}}
    labels = {
        split: {
            f"{split}{i}.wav": [seld_label(k, i % 2, 40.0) for k in range(2, 9)] for i in range(3)
        }
        for split in ("train", "valid", "test")
    }
    labels["test"]["test2.wav"].append(seld_label(15, 0, -90.0))  # in the padding: not scored
    task = tmp_path / "toy-seld"
    write_seld_task(task, labels, sample_duration=FRAMES / 10, evaluation_params=grid)
    embed = tmp_path / "embeddings" / "toy-seld"
    _write_embeddings(embed, labels)
    chunks = [
        {"split": s, "file": f, "audio_seconds": 1.0 if f == "test2.wav" else FRAMES / 10}
        for s in labels
        for f in labels[s]
    ]
    (task / "chunks.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chunks))
    scores = seld_probe.score_task(embed, task, "faster", 1)
    assert json.loads((embed / seld_probe.SCORES_NAME).read_text()) == scores
    assert scores["frames_from"] == "chunks.jsonl"
    n_ref = {name: sum(c["n_ref"]) for name, c in scores["file_counts"].items()}
    assert n_ref == {"test0.wav": 1, "test1.wav": 1, "test2.wav": 1}
    assert set(scores["test"]) == {*seld_probe.METRICS, "files"}
    (task / "chunks.jsonl").unlink()
    scores = seld_probe.score_task(embed, task, "faster", 1)
    assert scores["frames_from"] == "sample_duration"
    assert sum(scores["file_counts"]["test2.wav"]["n_ref"]) == 2


def test_files_of_any_length_take_their_wav_length(tmp_path):
    """sample_duration null (published RealSELD tasks): each file's frames come from its
    wav header; an event past a file's end is a listed problem."""
    labels = {split: {f"{split}0.wav": [seld_label(2)]} for split in ("train", "valid", "test")}
    task = tmp_path / "toy-seld"
    write_seld_task(task, labels, sample_duration=None)
    for split, seconds in (("train", 1.0), ("valid", 0.55), ("test", 2.0)):
        (task / "24000" / split).mkdir(parents=True)
        sf.write(task / "24000" / split / f"{split}0.wav", np.zeros((int(24000 * seconds), 4)),
                 24000)  # fmt: skip
    metadata = json.loads((task / "task_metadata.json").read_text())
    read = seld_folder.read_task(task, metadata)
    assert read.frames == {("train", "train0.wav"): 10, ("valid", "valid0.wav"): 6,
                           ("test", "test0.wav"): 20}  # fmt: skip
    assert read.frames_from == "wav lengths"
    labels["valid"]["valid0.wav"].append(seld_label(7))
    (task / "valid.json").write_text(json.dumps(labels["valid"]))
    with pytest.raises(ValueError, match=r"valid.json\['valid0.wav'\]\[1\]: starts at 700 ms"):
        seld_folder.read_task(task, metadata)


@pytest.mark.parametrize(
    "where, name",
    [("split", "../../outside"), ("file", "../../../outside.wav"), ("file", "/etc/passwd")],
)
def test_names_from_the_task_cannot_lead_outside_it(tmp_path, where, name):
    labels = {"a.wav": [seld_label(1, 0, 0.0)]}
    if where == "file":
        labels[name] = []
    task = tmp_path / "deep" / "er" / "task"
    write_seld_task(task, {"train": labels})
    metadata = json.loads((task / "task_metadata.json").read_text())
    if where == "split":
        metadata["splits"] = [name]
    with pytest.raises(ValueError, match="outside|absolute|'\\.\\.'"):
        seld_folder.read_task(task, metadata)
