"""Checkpoint folders, the reference-layout converter, Hub resolution and their errors."""

import json
import os
import shutil
import traceback
from pathlib import Path

import pytest
import torch
from reference_layout import ReferenceGramT, reference_state_dict
from safetensors.torch import save_file

from hear_gram import hear_api
from hear_gram.checkpoint import load_encoder, save_checkpoint
from hear_gram.convert import main as convert_main
from hear_gram.errors import CheckpointError
from hear_gram.gram import GramEncoder

SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def small_args(in_chans=2, patch=(16, 8)):
    return {"in_chans": in_chans, "patch_size": patch, **SMALL}


def test_save_then_load_gives_identical_outputs(tmp_path):
    encoder = GramEncoder(**small_args()).eval()
    save_checkpoint(tmp_path / "ckpt", encoder, "gram-binaural", small_args(), {"steps": 3})
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["variant"] == "gram-binaural" and config["metadata"] == {"steps": 3}
    loaded, _ = load_encoder(str(tmp_path / "ckpt"), "gram-binaural")
    x = torch.randn(2, 2, 128, 200)
    torch.testing.assert_close(loaded.eval()(x), encoder(x), rtol=0, atol=0)
    file_loaded, _ = load_encoder(str(tmp_path / "ckpt" / "model.safetensors"), "gram-binaural")
    torch.testing.assert_close(file_loaded.eval()(x), encoder(x), rtol=0, atol=0)


def test_save_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path):
    encoder = GramEncoder(**small_args())
    save_checkpoint(tmp_path / "ckpt", encoder, "gram-binaural", small_args())
    with pytest.raises(FileExistsError):
        save_checkpoint(tmp_path / "ckpt", encoder, "gram-binaural", small_args())
    with pytest.raises(KeyError, match="unknown variant"):
        save_checkpoint(tmp_path / "other", encoder, "gram-nope", small_args())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("prefix", ["model.", ""])
@pytest.mark.parametrize(
    "in_chans,patch,variant",
    [
        (2, (16, 8), "gram-binaural"),
        (2, (128, 2), "gram-binaural-time"),
        (7, (16, 8), "gram-ambisonics"),
    ],
)
def test_reference_layout_loads_with_identical_outputs(tmp_path, prefix, in_chans, patch, variant):
    torch.manual_seed(0)
    reference = ReferenceGramT(in_chans, patch, dim=128, depth=2, heads=2).eval()
    path = tmp_path / "model.safetensors"
    save_file(reference_state_dict(reference, prefix), path)
    encoder, config = load_encoder(str(path), variant)
    assert config["encoder"]["in_chans"] == in_chans and config["encoder"]["depth"] == 2
    x = torch.randn(2, in_chans, 128, 200)
    expected = reference(x)
    cls, _ = encoder.eval()(x)
    torch.testing.assert_close(encoder.forward_tokens(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls, expected[:, 0], rtol=1e-5, atol=1e-5)


def test_reference_stereo_clean_model_folds_to_mono_exactly(tmp_path):
    torch.manual_seed(1)
    reference = ReferenceGramT(2, (16, 8), dim=128, depth=1, heads=2).eval()
    save_file(reference_state_dict(reference), tmp_path / "model.safetensors")
    mono, _ = load_encoder(str(tmp_path / "model.safetensors"), "gram-clean")
    assert mono.in_chans == 1
    x = torch.randn(2, 1, 128, 200)
    torch.testing.assert_close(
        mono.eval().forward_tokens(x), reference(x.expand(-1, 2, -1, -1)), rtol=1e-5, atol=1e-5
    )


def test_reference_unknown_missing_and_misshaped_keys_are_named(tmp_path):
    reference = ReferenceGramT(2, (16, 8), dim=128, depth=2, heads=2)
    state = reference_state_dict(reference)
    state["model.extra_head.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="model.extra_head.weight"):
        load_encoder(str(tmp_path / "a.safetensors"), "gram-binaural")
    state = reference_state_dict(reference)
    del state["model.encoder.layers.encoder_layer_1.ln_2.bias"]
    save_file(state, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks.1.norm2.bias'\]"):
        load_encoder(str(tmp_path / "b.safetensors"), "gram-binaural")
    state = reference_state_dict(reference)
    state["model.encoder.layers.encoder_layer_0.mlp.3.bias"] = torch.zeros(31)
    save_file(state, tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match=r"blocks.0.mlp.fc2.bias: checkpoint \(31,\)"):
        load_encoder(str(tmp_path / "c.safetensors"), "gram-binaural")


def test_reference_with_other_features_is_refused(tmp_path):
    state = reference_state_dict(ReferenceGramT(2, (16, 8), dim=128, depth=1, heads=2))
    state["model.melspec.mel_scale.fb"] = state["model.melspec.mel_scale.fb"] * 1.1
    save_file(state, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="trained with other features"):
        load_encoder(str(tmp_path / "m.safetensors"), "gram-binaural")


def test_checkpoint_of_another_variant_is_refused(tmp_path):
    args = small_args(in_chans=7)
    save_checkpoint(tmp_path / "ambi", GramEncoder(**args), "gram-ambisonics", args)
    with pytest.raises(
        CheckpointError, match="gram-ambisonics checkpoint.*hear_gram.gram_ambisonics"
    ):
        load_encoder(str(tmp_path / "ambi"), "gram-binaural")
    save_file(
        reference_state_dict(ReferenceGramT(7, (16, 8), 128, 1, 2)), tmp_path / "r.safetensors"
    )
    with pytest.raises(CheckpointError, match="7 input channels.*looks like gram-ambisonics"):
        load_encoder(str(tmp_path / "r.safetensors"), "gram-binaural")


def test_pickle_files_are_never_loaded(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_encoder(str(path), "gram-binaural")


def test_convert_command_writes_a_loadable_folder(tmp_path):
    torch.manual_seed(2)
    reference = ReferenceGramT(2, (16, 8), dim=128, depth=1, heads=2).eval()
    state = {k.removeprefix("model."): v for k, v in reference_state_dict(reference).items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ref.ckpt")
    assert (
        convert_main(
            [str(tmp_path / "ref.ckpt"), str(tmp_path / "out"), "--variant", "gram-binaural"]
        )
        == 0
    )
    encoder, _ = load_encoder(str(tmp_path / "out"), "gram-binaural")
    x = torch.randn(1, 2, 128, 200)
    torch.testing.assert_close(encoder.eval().forward_tokens(x), reference(x), rtol=1e-5, atol=1e-5)
    assert (
        convert_main(
            [str(tmp_path / "ref.ckpt"), str(tmp_path / "out"), "--variant", "gram-binaural"]
        )
        == 2
    )


def fake_hub_cache(cache, repo_id, files):
    """Lay files out as huggingface_hub's cache does: models--org--name/{refs,snapshots}."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        shutil.copy(source, snapshot / name)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache (``HF_HUB_CACHE``) read offline (:func:`fake_hub_cache` fills it)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def test_hub_reference_resolves_from_the_local_cache_offline(tmp_path, offline_hub):
    torch.manual_seed(3)
    reference = ReferenceGramT(2, (16, 8), dim=128, depth=1, heads=2).eval()
    save_file(reference_state_dict(reference), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gramt"}))
    fake_hub_cache(
        offline_hub,
        "someone/gram-test",
        {
            "model.safetensors": tmp_path / "model.safetensors",
            "config.json": tmp_path / "config.json",
        },
    )
    encoder, config = load_encoder("someone/gram-test", "gram-binaural")
    x = torch.randn(1, 2, 128, 200)
    torch.testing.assert_close(encoder.eval().forward_tokens(x), reference(x), rtol=1e-5, atol=1e-5)
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert config["metadata"]["converted_from"] == f"someone/gram-test@{commit}"


def test_default_weights_offline_and_not_cached_say_how_to_get_them(tmp_path, offline_hub):
    with pytest.raises(
        CheckpointError, match="labhamlet/gramt-binaural.*`hf download labhamlet/gramt-binaural`"
    ):
        hear_api.load_model("gram-binaural")
    # every released model is its module's default (labhamlet's five)
    for variant, repo in [
        ("gram-binaural-time", "gramt-binaural-time"),
        ("gram-binaural-frame", "gramt-binaural-frame"),
        ("gram-clean", "gramt-mono"),
        ("gram-ambisonics", "gramt-ambisonics"),
    ]:
        with pytest.raises(CheckpointError, match=f"`hf download labhamlet/{repo}`"):
            hear_api.load_model(variant)
    with pytest.raises(ValueError, match="no released weights"):
        hear_api.load_model("gram-m-ambisonics")
    with pytest.raises(CheckpointError, match="neither an existing file"):
        hear_api.load_model("gram-binaural", str(tmp_path / "missing" / "x"))


def test_missing_local_path_shaped_like_a_hub_reference_says_so_first(
    tmp_path, monkeypatch, offline_hub
):
    """The README's exported/gram-binaural before exporting: not a Hub problem first, the
    current huggingface_hub CLI's advice, and one traceback (no chained Hub errors)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as caught:
        hear_api.load_model("gram-binaural", "exported/gram-binaural@v1")
    message = str(caught.value)
    assert message.startswith(
        f"no local file or folder 'exported/gram-binaural@v1' exists (relative to {tmp_path})"
    )
    assert "`hf download exported/gram-binaural --revision v1`" in message
    assert "huggingface-cli" not in message
    printed = "".join(traceback.format_exception(caught.value))
    assert printed.count("Traceback") == 1, printed


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a pickle under the safetensors name
        torch.save({"w": torch.zeros(3)}, path)


@pytest.mark.parametrize("how", ["truncated", "random bytes", "empty", "pickle"])
def test_damaged_weights_name_the_file_and_the_fix(tmp_path, capsys, how):
    save_checkpoint(tmp_path / "ckpt", GramEncoder(**small_args()), "gram-binaural", small_args())
    weights = tmp_path / "ckpt" / "model.safetensors"
    _damage(weights, how)
    with pytest.raises(CheckpointError, match=f"{weights} is not a readable safetensors file"):
        load_encoder(str(tmp_path / "ckpt"), "gram-binaural")
    out = tmp_path / "out"
    assert convert_main([str(weights), str(out), "--variant", "gram-binaural"]) == 2
    err = capsys.readouterr().err
    assert f"{weights} is not a readable safetensors file" in err and "copy" in err.lower()
    assert not out.exists()


@pytest.mark.parametrize("name", ["missing.safetensors", "missing.ckpt"])
def test_convert_of_a_missing_file_exits_2(tmp_path, capsys, name):
    source = tmp_path / name
    assert convert_main([str(source), str(tmp_path / "out"), "--variant", "gram-binaural"]) == 2
    assert f"error: {source} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda c: "{not json", "is not valid JSON"),
        (lambda c: {k: v for k, v in c.items() if k != "variant"}, "'variant' missing"),
        (lambda c: {k: v for k, v in c.items() if k != "format_version"}, "'format_version' mi"),
        (lambda c: {**c, "encoder": [1]}, "'encoder' is not a dict"),
        (lambda c: {**c, "variant": "gram-nope"}, "names variant 'gram-nope', which this"),
        (lambda c: {**c, "features": "mono"}, "gram-binaural has features 'binaural', not"),
        (lambda c: {**c, "format_version": 9}, "format_version 9; this hear_gram reads"),
        (lambda c: {**c, "encoder": {**c["encoder"], "colour": 1}}, "do not build a gram"),
    ],
    ids=[
        "json",
        "no-variant",
        "no-version",
        "encoder-type",
        "unknown-variant",
        "features",
        "version",
        "args",
    ],
)
def test_broken_config_names_the_file(tmp_path, edit, match):
    save_checkpoint(tmp_path / "ckpt", GramEncoder(**small_args()), "gram-binaural", small_args())
    path = tmp_path / "ckpt" / "config.json"
    edited = edit(json.loads(path.read_text()))
    path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(CheckpointError, match=match) as caught:
        load_encoder(str(tmp_path / "ckpt"), "gram-binaural")
    assert str(path) in str(caught.value)


RELEASED = {
    "gram-binaural": "labhamlet/gramt-binaural",
    "gram-binaural-time": "labhamlet/gramt-binaural-time",
    "gram-binaural-frame": "labhamlet/gramt-binaural-frame",
    "gram-clean": "labhamlet/gramt-mono",
    "gram-ambisonics": "labhamlet/gramt-ambisonics",
}
LAYOUT_OF = {  # variant -> (input channels, patch) of its reference model
    "gram-binaural": (2, (16, 8)),
    "gram-binaural-time": (2, (128, 2)),
    "gram-binaural-frame": (2, (16, 8)),
    "gram-clean": (2, (16, 8)),  # the mono model fed mono copied to both channels
    "gram-ambisonics": (7, (16, 8)),
}
TRANSFORMERS_CONFIG = {  # a custom-code transformers repository's config.json
    "model_type": "gramt",
    "architectures": ["GRAMTModel"],
    "auto_map": {"AutoModel": "modeling_gramt.GRAMTModel"},
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,  # not 128 / 64: only the config can tell
    "layer_norm_eps": 1e-6,
}


def _wrapper_state(reference, layout: str) -> dict:
    """The same weights as each release might hold them: the reference's Lightning
    state_dict, the runtime's model.-prefixed file, a transformers PreTrainedModel around
    that runtime."""
    prefix = {"lightning": "", "runtime": "model.", "pretrained": "gramt.model."}[layout]
    state = reference_state_dict(reference, prefix)
    if layout == "pretrained":  # the wrapper's own feature extractor sits outside the model
        state = {k.replace("gramt.mel_spec.", "gramt.feature_extractor.mel_spec."): v
                 for k, v in state.items()}  # fmt: skip
    return state


@pytest.mark.parametrize("layout", ["lightning", "runtime", "pretrained"])
@pytest.mark.parametrize("variant", sorted(RELEASED))
def test_every_released_reference_loads_from_the_hub_cache(tmp_path, offline_hub, variant, layout):
    """Each of the five released repositories, as its module's default, from a Hub cache
    holding its weights in any of the plausible layouts, a transformers config.json (heads
    taken from it) and custom modeling code that must never run."""
    torch.manual_seed(4)
    in_chans, patch = LAYOUT_OF[variant]
    reference = ReferenceGramT(in_chans, patch, dim=128, depth=2, heads=4).eval()
    files = tmp_path / "files"
    files.mkdir()
    save_file(_wrapper_state(reference, layout), files / "model.safetensors")
    (files / "config.json").write_text(json.dumps(TRANSFORMERS_CONFIG))
    marker = tmp_path / "code-ran"
    (files / "modeling_gramt.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    fake_hub_cache(offline_hub, RELEASED[variant], {n: files / n for n in os.listdir(files)})
    model = hear_api.load_model(variant, sample_rate=16000)
    assert model.encoder.blocks[0].attn.num_heads == 4 and not marker.exists()
    x = torch.randn(1, in_chans, 128, 200)
    expected = reference(x)
    if variant == "gram-clean":  # folded to one channel: mono copied to both
        x, expected = x[:, :1], reference(x[:, :1].expand(-1, 2, -1, -1))
    torch.testing.assert_close(model.encoder.forward_tokens(x), expected, rtol=1e-5, atol=1e-5)


def test_sharded_weights_load_and_mismatches_name_repository_and_revision(tmp_path, offline_hub):
    torch.manual_seed(5)
    reference = ReferenceGramT(2, (16, 8), dim=128, depth=2, heads=4).eval()
    state = reference_state_dict(reference)
    keys = sorted(state)
    files = tmp_path / "files"
    files.mkdir()
    halves = {"model-00001-of-00002.safetensors": keys[::2],
              "model-00002-of-00002.safetensors": keys[1::2]}  # fmt: skip
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, files / name)
    weight_map = {k: name for name, part in halves.items() for k in part}
    (files / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (files / "config.json").write_text(json.dumps(TRANSFORMERS_CONFIG))
    fake_hub_cache(
        offline_hub, "labhamlet/gramt-binaural", {n: files / n for n in os.listdir(files)}
    )
    encoder, _ = load_encoder("labhamlet/gramt-binaural", "gram-binaural")
    x = torch.randn(1, 2, 128, 200)
    torch.testing.assert_close(encoder.eval().forward_tokens(x), reference(x), rtol=1e-5, atol=1e-5)
    # a config that disagrees with the weights, then weights with an unknown key
    (files / "config.json").write_text(json.dumps({**TRANSFORMERS_CONFIG, "hidden_size": 256}))
    shutil.rmtree(offline_hub)
    fake_hub_cache(
        offline_hub, "labhamlet/gramt-binaural", {n: files / n for n in os.listdir(files)}
    )
    commit = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(CheckpointError, match=rf"labhamlet/gramt-binaural@{commit}: its "
                       r"config.json disagrees.*embed_dim 256.*128"):  # fmt: skip
        load_encoder("labhamlet/gramt-binaural", "gram-binaural")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"embed_dim": 10_000_000}, r"embed_dim 10000000: not an integer in \[4, 4096\]"),
        ({"depth": 100_000}, r"depth 100000: not an integer in \[1, 64\]"),
        ({"mlp_ratio": 1e6}, r"mlp_ratio 1000000.0: not a number in \[0.25, 16\]"),
        ({"chunk_frames": 100_000_000}, "chunk_frames 100000000: hear_gram's features give 200"),
        ({"num_heads": 0}, r"num_heads 0: not an integer in \[1, 256\]"),
        ({"n_mels": -128}, "n_mels -128: hear_gram's features give 128"),
        ({"embed_dim": 64}, "embed_dim 64 but the weights have 32"),
        ({"depth": 3}, "depth 3 but the weights have 2"),
        ({"num_heads": 5}, "num_heads 5 does not divide embed_dim 32"),
    ],
)
def test_config_values_are_bounded_and_checked_against_the_weights_before_building(
    tmp_path, monkeypatch, edit, match
):
    """An untrusted config.json cannot make load_model allocate until the OOM killer: every
    value is bounded and the sizes must be the weights' (nothing is built before)."""
    folder = save_checkpoint(tmp_path / "ckpt", GramEncoder(**small_args()), "gram-binaural",
                             small_args())  # fmt: skip
    config = json.loads((folder / "config.json").read_text())
    config["encoder"].update(edit)
    (folder / "config.json").write_text(json.dumps(config))
    built = []
    monkeypatch.setattr(GramEncoder, "__init__", lambda *a, **k: built.append(1) or None)
    with pytest.raises(CheckpointError, match=match):
        load_encoder(str(folder), "gram-binaural")
    assert not built
