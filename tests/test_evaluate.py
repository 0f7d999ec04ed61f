"""``natheear-tasks evaluate`` end to end on a tiny task set: a scene task and a binaural
localization task made by natheear's ``localize``, a tiny random GRAM checkpoint, the
log-mel baseline and a Hub model that cannot be downloaded offline."""

import json

import pytest
from natheear_helpers import write_task

from hear_gram.checkpoint import save_checkpoint
from hear_gram.gram import GramEncoder
from natheear_tasks.cli import main
from natheear_tasks.tasks.convert import Options, prepare, run

pytestmark = pytest.mark.slow

TINY = {"in_chans": 2, "patch_size": (16, 8), "embed_dim": 32, "depth": 1, "num_heads": 2}
OPTIONS = '{"sample_rate": 16000}'


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    monkey = pytest.MonkeyPatch()
    monkey.setenv("NATHEEAR_CACHE", str(root / "cache"))
    monkey.setenv("HF_HUB_OFFLINE", "1")
    sources, tasks = root / "sources", root / "tasks"
    scene = write_task(sources, "tones", "scene", files_per_split=8, rates=(16000,))
    write_task(tasks, "tones", "scene", files_per_split=8, rates=(16000,))
    options = Options(format="binaural", localization=True, bank_size=6)
    assert run(prepare(scene, tasks, options)).complete
    save_checkpoint(root / "tiny", GramEncoder(**TINY), "gram-binaural", TINY)
    (root / "refs.json").write_text(json.dumps({"baseline": "logmel", "best": "perfect"}))
    yield root
    monkey.undo()


def _evaluate(root, *extra: str) -> int:
    args = ["evaluate", "--tasks-dir", str(root / "tasks"), "--out", str(root / "results")]
    args += ["--grid", "faster", "--grid-points", "1", "--references", str(root / "refs.json")]
    return main(args + list(extra))


MODELS = (
    "--module", "hear_gram", "--model", "MODEL", "--label", "tiny",
    "--module", "natheear_tasks.baselines.logmel", "--model", "none", "--label", "logmel",
    "--module", "hear_gram", "--model", "nobody/no-such-model", "--label", "released",
    "--model-options", OPTIONS,
)  # fmt: skip


def _models(root) -> list[str]:
    return [str(root / "tiny") if a == "MODEL" else a for a in MODELS]


def test_evaluate_scores_tasks_and_writes_the_report(setup, capsys):
    root = setup
    assert _evaluate(root, *_models(root)) == 1  # a required model is unavailable
    printed = capsys.readouterr().out
    results = root / "results"
    summary = json.loads((results / "summary.json").read_text())
    names = [t["name"] for t in summary["tasks"]]
    assert names == ["tones", "tones-localization-binaural"]
    status = {m["label"]: m["status"] for m in summary["models"]}
    assert status == {"tiny": "ok", "logmel": "ok", "released": "unavailable"}
    released = next(m for m in summary["models"] if m["label"] == "released")
    assert "nobody/no-such-model" in released["reason"]
    for label in ("tiny", "logmel"):
        scores = summary["scores"][label]
        assert 0.0 <= scores["tones"]["score"] <= 1.0
        where = scores["tones-localization-binaural"]
        assert 0.0 <= where["median"] <= 180.0 and where["score"] == where["mean"]
    assert summary["scores"]["released"] == {}
    s_m = summary["s_m"]["models"]
    assert s_m["logmel"]["s_m"] == 0.0  # the baseline of every task
    assert 0.0 <= s_m["tiny"]["s_m"] <= 100.0
    table = (results / "summary.md").read_text()
    assert table in printed
    assert "| tones-localization-binaural | DoA error, mean / median ↓ |" in table
    assert "released: unavailable" in table and "**s(m)** (2 tasks)" in table
    for png in ("scores.png", "doa_errors.png"):
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scored = results / "runs" / "tiny" / "embeddings"
    doa = json.loads(
        next(scored.glob("*/tones-localization-binaural/test.doa-scores.json")).read_text()
    )
    assert len(doa["errors_deg"]) == 8 and doa["metric"] == "mean_doa_error_deg"


def test_evaluate_skips_scored_tasks_and_refuses_mixed_results(setup, capsys):
    root = setup
    log = root / "results" / "runs" / "tiny" / "embeddings.log"
    before = log.read_text()
    only_tiny = [str(root / "tiny"), "--model-options", OPTIONS, "--label", "tiny"]
    assert _evaluate(root, "--model", *only_tiny) == 0
    assert log.read_text() == before  # nothing recomputed
    assert "s(m) leaves out tones: baseline 'logmel' is not a model" in capsys.readouterr().out
    # Other load options under the same label would mix results: refused, then forced.
    other = ["--model", str(root / "tiny"), "--label", "tiny", "--model-options", "{}"]
    assert _evaluate(root, *other) == 2
    assert "pass --force" in capsys.readouterr().err
    assert _evaluate(root, "--model", *only_tiny, "--force", "--task", "tones") == 0
    assert log.read_text() != before


def test_evaluate_bad_input_exits_2(tmp_path, capsys):
    assert main(["evaluate", "--tasks-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    tasks = tmp_path / "tasks"
    write_task(tasks, "tones", "scene", files_per_split=2, rates=(16000,))
    args = ["evaluate", "--tasks-dir", str(tasks), "--out", str(tmp_path / "r")]
    assert main(args + ["--model-options", '{"sample_rate": 48000}']) == 2
    assert "takes 48000 Hz, but tones has only ['16000']" in capsys.readouterr().err
    assert main(args + ["--model", "a", "--model", "b", "--label", "x"]) == 2
    assert main(args + ["--task", "missing"]) == 2
    metadata = json.loads((tasks / "tones" / "task_metadata.json").read_text())
    metadata.update(prediction_type="localization", evaluation=["mean_doa_error_deg"])
    (tasks / "tones" / "task_metadata.json").write_text(json.dumps(metadata))
    (tasks / "tones" / "train.json").write_text(json.dumps({"train-0.wav": [30.0, 10.0]}))
    assert main(args) == 2
    assert "must be a unit vector [x, y, z], got [30.0, 10.0]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as help_exit:
        main(["evaluate", "--help"])
    assert help_exit.value.code == 0
