"""``natheear-tasks evaluate`` end to end on a tiny task set: a scene task and a binaural
localization task made by natheear's ``localize``, a tiny random GRAM checkpoint, the
log-mel baseline and a Hub model that cannot be downloaded offline; the same scores with 1
and 2 threads; the sample-rate pre-flight."""

import json
import sys
import types

import pytest
import torch
from source_tasks import write_task
from thread_runs import summaries_with_1_and_2_threads

from hear_gram.checkpoint import save_checkpoint
from hear_gram.gram import GramEncoder
from natheear_tasks.cli import main
from natheear_tasks.evaluation import models
from natheear_tasks.evaluation.errors import UsageError
from natheear_tasks.evaluation.models import ModelSpec
from natheear_tasks.tasks.convert import Options, prepare, run

pytestmark = pytest.mark.slow

TINY = {"in_chans": 2, "patch_size": (16, 8), "embed_dim": 32, "depth": 1, "num_heads": 2}
OPTIONS = '{"sample_rate": 16000}'
BASELINE = "natheear_tasks.baselines.logmel"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    monkey = pytest.MonkeyPatch()
    monkey.setenv("NATHEEAR_CACHE", str(root / "cache"))
    monkey.setenv("HF_HUB_OFFLINE", "1")
    _tasks(root, files_per_split=8)
    save_checkpoint(root / "tiny", GramEncoder(**TINY), "gram-binaural", TINY)
    (root / "refs.json").write_text(json.dumps({"baseline": "logmel", "best": "perfect"}))
    yield root
    monkey.undo()


def _tasks(root, files_per_split: int) -> None:
    """``root/tasks``: the tones scene task and its binaural localization task (16 kHz)."""
    scene = write_task(
        root / "sources", "tones", "scene", files_per_split=files_per_split, rates=(16000,)
    )
    write_task(root / "tasks", "tones", "scene", files_per_split=files_per_split, rates=(16000,))
    options = Options(format="binaural", localization=True, bank_size=6)
    assert run(prepare(scene, root / "tasks", options)).complete


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
        tones = scores["tones"]
        assert 0.0 <= tones["score"] <= 1.0
        assert tones["ci95"][0] <= tones["score"] <= tones["ci95"][1]
        assert (tones["ci95_method"], tones["items"]) == ("bootstrap-clips", 8)
        where = scores["tones-localization-binaural"]
        assert 0.0 <= where["median"] <= 180.0 and where["score"] == where["mean"]
        assert where["ci95"] == where["mean_ci95"]
        for key in ("mean", "median"):
            low, high = where[f"{key}_ci95"]
            assert 0.0 <= low <= where[key] <= high <= 180.0
    assert summary["scores"]["released"] == {}
    s_m = summary["s_m"]["models"]
    assert s_m["logmel"]["s_m"] == 0.0  # the baseline of every task
    assert s_m["logmel"]["ci95"] == [0.0, 0.0]  # paired: the baseline of every resample too
    assert 0.0 <= s_m["tiny"]["ci95"][0] <= s_m["tiny"]["s_m"] <= s_m["tiny"]["ci95"][1]
    assert s_m["tiny"]["resamples"] > 900
    assert summary["settings"]["resamples"] == 1000 and summary["settings"]["seed"] == 42
    environment = summary["environment"]
    assert environment["threads"]["probe_training"] == 1 and environment["torch"]
    assert environment["cpu"]
    table = (results / "summary.md").read_text()
    assert table in printed
    assert "| tones-localization-binaural | DoA error, mean / median ↓ |" in table
    assert "released: unavailable" in table and "**s(m)** (2 tasks)" in table
    assert "95 % confidence interval; bootstrap over test clips (1000 resamples)" in table
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
    options = '{"sample_rate": 16000, "batch_chunks": 4}'
    other = ["--model", str(root / "tiny"), "--label", "tiny", "--model-options", options]
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
    error = capsys.readouterr().err
    assert "takes 48000 Hz (its sample_rate option), but tones has only ['16000']" in error
    assert """pass --model-options '{"sample_rate": 16000}'""" in error
    assert main(args + ["--model", "a", "--model", "b", "--label", "x"]) == 2
    assert main(args + ["--task", "missing"]) == 2
    metadata = json.loads((tasks / "tones" / "task_metadata.json").read_text())
    metadata.update(prediction_type="localization", evaluation=["mean_doa_error_deg"])
    (tasks / "tones" / "task_metadata.json").write_text(json.dumps(metadata))
    (tasks / "tones" / "train.json").write_text(json.dumps({"train-0.wav": [30.0, 100.0]}))
    assert main(args) == 2
    assert (
        "localization label [30.0, 100.0]: elevation outside [-90, 90]" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as help_exit:
        main(["evaluate", "--help"])
    assert help_exit.value.code == 0


def test_evaluate_checks_the_module_default_rate_before_any_work(setup, tmp_path, capsys):
    # hear_gram takes 48 kHz unless told otherwise; the tasks have only 16 kHz. This used
    # to start the embeddings and fail there (heareval: ".../48000/train is not a directory").
    root = setup
    args = ["evaluate", "--tasks-dir", str(root / "tasks"), "--out", str(tmp_path / "out")]
    assert main(args + ["--model", str(root / "tiny")]) == 2
    error = capsys.readouterr().err
    assert "tiny takes 48000 Hz (the default of hear_gram), but tones has only ['16000']" in error
    assert """pass --model-options '{"sample_rate": 16000}'""" in error
    assert not (tmp_path / "out").exists()  # nothing started


def _module(monkeypatch, name: str, **attributes) -> str:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    monkeypatch.setitem(sys.modules, name, module)
    return name


def test_module_sample_rate_sources(monkeypatch):
    class Loaded:
        sample_rate = 44100

    def load_with_default(model_file_path: str = "", sample_rate: int = 22050):
        raise AssertionError("not loaded when the signature says the rate")

    def load_any(*args, **kwargs):
        return Loaded()

    def load_broken(*args, **kwargs):
        raise OSError("no weights here")

    constant = _module(monkeypatch, "rate_constant", DEFAULT_SAMPLE_RATE=32000, load_model=None)
    signature = _module(monkeypatch, "rate_signature", load_model=load_with_default)
    loaded = _module(monkeypatch, "rate_loaded", load_model=load_any)
    broken = _module(monkeypatch, "rate_broken", load_model=load_broken)
    rate = models.module_sample_rate
    assert rate(ModelSpec("a", constant, options={"sample_rate": 16000})) == (
        16000,
        "its sample_rate option",
    )
    assert rate(ModelSpec("a", constant)) == (32000, "the default of rate_constant")
    assert rate(ModelSpec("a", signature)) == (22050, "the default of rate_signature.load_model")
    assert rate(ModelSpec("a", loaded)) == (44100, "rate_loaded.load_model(...).sample_rate")
    assert rate(ModelSpec("a", loaded, "org/not-downloaded"))[0] is None
    value, why = rate(ModelSpec("a", broken))
    assert value is None and "OSError: no weights here" in why
    assert rate(ModelSpec("a", "hear_gram.gram_ambisonics"))[0] == 48000
    assert rate(ModelSpec("a", "natheear_tasks.baselines.logmel"))[0] == 48000
    with pytest.raises(UsageError, match="cannot be imported"):
        rate(ModelSpec("a", "no_such_module_here"))


def test_random_weights_are_accepted_as_load_model_accepts_them(tmp_path, monkeypatch):
    spec = ModelSpec("untrained", "hear_gram", "random")
    assert models.resolve_weights(spec) == "random"
    assert models.weights_digest("random") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "random").mkdir()  # a folder of that name is a path, as in load_model
    assert models.resolve_weights(spec) == tmp_path / "random"


def test_evaluate_gives_the_same_scores_with_1_and_2_threads(tmp_path):
    """Two runs of the same tasks and models, one process with 1 intra-op thread and one
    with 2 that also evaluates the two models at once (``--jobs 2``): the same scores,
    intervals and s(m), bit for bit."""
    _tasks(tmp_path, files_per_split=16)
    save_checkpoint(tmp_path / "tiny", GramEncoder(**TINY), "gram-binaural", TINY)
    references = {"best": "perfect", "tasks": {"tones": {"baseline": 0.5}}}
    references["tasks"]["tones-localization-binaural"] = {"baseline": 90.0}
    (tmp_path / "refs.json").write_text(json.dumps(references))

    def arguments(out) -> list[str]:
        args = ["evaluate", "--label", "tiny", "--tasks-dir", str(tmp_path / "tasks")]
        args += ["--out", str(out), "--grid", "faster", "--grid-points", "2"]
        args += ["--model-options", OPTIONS, "--references", str(tmp_path / "refs.json")]
        args += ["--module", "hear_gram", "--model", str(tmp_path / "tiny")]
        return args + ["--label", "logmel", "--module", BASELINE, "--model", "none"]

    one, two = summaries_with_1_and_2_threads(arguments, tmp_path, ("--jobs", "2"))
    assert [m["label"] for m in two["models"]] == ["tiny", "logmel"]
    assert one["scores"] == two["scores"] and set(one["scores"]) == {"tiny", "logmel"}
    assert one["s_m"] == two["s_m"] and one["s_m"]["models"]["tiny"]["ci95"] is not None
    assert one["scores"]["tiny"]["tones-localization-binaural"]["items"] == 16


def test_the_weights_digest_follows_the_weights_not_where_they_were_made(tmp_path):
    # The digest seeds the probes: the same weights exported to another folder, with other
    # run paths in their metadata, must get the same digest; other weights another one.
    torch.manual_seed(0)
    encoder = GramEncoder(**TINY)
    one = save_checkpoint(tmp_path / "a", encoder, "gram-binaural", TINY, {"run": "/x/run"})
    two = save_checkpoint(tmp_path / "b", encoder, "gram-binaural", TINY, {"run": "/y/other"})
    assert (one / "config.json").read_text() != (two / "config.json").read_text()
    assert models.weights_digest(one) == models.weights_digest(two)
    with torch.no_grad():
        encoder.cls_token.add_(1.0)
    changed = save_checkpoint(tmp_path / "c", encoder, "gram-binaural", TINY, {"run": "/x/run"})
    assert models.weights_digest(changed) != models.weights_digest(one)
