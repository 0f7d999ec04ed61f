"""GRAM-M: the encoder, its padding rule, reference-layout weights and the HEAR modules."""

import pytest
import torch
from reference_layout import ReferenceGramM, ReferenceGramT, reference_state_dict
from safetensors.torch import save_file

from hear_gram import gram_m_ambisonics, gram_m_binaural, gram_m_binaural_time
from hear_gram.checkpoint import load_encoder
from hear_gram.convert import main as convert_main
from hear_gram.errors import CheckpointError
from hear_gram.gram_m import GramMEncoder

SMALL = {"embed_dim": 32, "depth": 2, "d_state": 8, "headdim": 16}


def reference_state(model: ReferenceGramM, prefix: str = "") -> dict:
    """As the reference's checkpoints hold it, plus the mel front end's buffers and decoder
    keys (``decoder_v`` blocks, as GRAMM names them)."""
    state = {prefix + k: v.detach().clone() for k, v in model.state_dict().items()}
    extras = reference_state_dict(ReferenceGramT(2, (16, 8), 32, 1, 2), prefix)
    state.update({k: v for k, v in extras.items() if "melspec" in k})
    state[prefix + "mask_token"] = torch.zeros(1, 1, 16)
    state[prefix + "decoder_v.0.wmha.qkv.weight"] = torch.randn(48, 16)
    return state


def test_padded_columns_never_reach_real_tokens():
    torch.manual_seed(0)
    encoder = GramMEncoder(in_chans=2, **SMALL).eval()
    x = torch.randn(2, 2, 128, 200)
    valid = torch.tensor([25, 9])
    cls, steps = encoder(x, valid)
    noisy = x.clone()
    noisy[1, :, :, 72:] = 100 * torch.randn(2, 128, 128)  # the padded frames of clip 1
    _, steps_noisy = encoder(noisy, valid)
    torch.testing.assert_close(steps_noisy[1, :9], steps[1, :9])
    torch.testing.assert_close(steps[0], encoder(x[:1])[1][0])  # nothing padded: unchanged
    # The real tokens of clip 1 alone, in order, give the same step embeddings.
    rows, cols = encoder.grid
    keep = torch.tensor([[f * cols + t for f in range(rows) for t in range(9)]])
    alone = encoder.forward_tokens(x[1:], keep=keep)[0, 1:].reshape(rows, 9, -1)
    torch.testing.assert_close(steps[1, :9], alone.transpose(0, 1).reshape(9, -1))


@pytest.mark.parametrize("prefix", ["", "model."])
@pytest.mark.parametrize(
    "in_chans,patch,variant,rms_norm",
    [
        (2, (16, 8), "gram-m-binaural", False),
        (2, (128, 2), "gram-m-binaural-time", True),
        (7, (16, 8), "gram-m-ambisonics", False),
    ],
)
def test_reference_layout_loads_strictly_with_equal_outputs(
    tmp_path, prefix, in_chans, patch, variant, rms_norm
):
    torch.manual_seed(1)
    reference = ReferenceGramM(in_chans, patch, dim=32, depth=3, rms_norm=rms_norm).eval()
    save_file(reference_state(reference, prefix), tmp_path / "model.safetensors")
    encoder, config = load_encoder(str(tmp_path / "model.safetensors"), variant)
    args = config["encoder"]
    assert (args["depth"], args["d_state"], args["headdim"], args["expand"]) == (3, 16, 16, 2)
    assert args["norm"] == ("rmsnorm" if rms_norm else "layernorm")
    x = torch.randn(2, in_chans, 128, 200)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.eval().forward_tokens(x).double(), reference(x), rtol=1e-4, atol=1e-4
        )


def test_lightning_checkpoint_converts_and_loads(tmp_path):
    torch.manual_seed(2)
    reference = ReferenceGramM(2, (16, 8), dim=32, depth=2).eval()
    torch.save({"state_dict": reference_state(reference), "epoch": 1}, tmp_path / "ref.ckpt")
    out = tmp_path / "out"
    assert convert_main([str(tmp_path / "ref.ckpt"), str(out), "--variant", "gram-m-binaural"]) == 0
    model = gram_m_binaural.load_model(str(out), sample_rate=16000)
    x = torch.randn(1, 2, 128, 200)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(
            model.encoder.forward_tokens(x).double(), expected, rtol=1e-4, atol=1e-4
        )


def test_unknown_and_missing_keys_are_named(tmp_path):
    torch.manual_seed(3)
    state = reference_state(ReferenceGramM(2, (16, 8), dim=32, depth=2))
    state["encoder_v.layers.0.mixer.extra"] = torch.zeros(3)
    save_file(state, tmp_path / "a.safetensors")
    with pytest.raises(
        CheckpointError, match=r"a.safetensors.*unexpected keys.*blocks\.0\.mixer\.extra"
    ):
        load_encoder(str(tmp_path / "a.safetensors"), "gram-m-binaural")
    del state["encoder_v.layers.0.mixer.extra"]
    state["encoder_v.lm_head.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match=r"unrecognised keys in a reference GRAM-M.*lm_head"):
        load_encoder(str(tmp_path / "c.safetensors"), "gram-m-binaural")
    del state["encoder_v.lm_head.weight"], state["encoder_v.layers.1.mixer.D"]
    save_file(state, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks\.1\.mixer\.D'\]"):
        load_encoder(str(tmp_path / "b.safetensors"), "gram-m-binaural")


def test_an_architecture_mismatch_names_the_module_to_use(tmp_path):
    torch.manual_seed(4)
    save_file(reference_state(ReferenceGramM(2, (16, 8), 32, 1)), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="GRAM-M checkpoint.*hear_gram.gram_m_binaural"):
        load_encoder(str(tmp_path / "m.safetensors"), "gram-binaural")
    save_file(
        reference_state_dict(ReferenceGramT(2, (16, 8), 32, 1, 2)), tmp_path / "t.safetensors"
    )
    with pytest.raises(CheckpointError, match="GRAM-T checkpoint.*hear_gram.gram_binaural"):
        load_encoder(str(tmp_path / "t.safetensors"), "gram-m-binaural")


def test_hear_modules_embed_and_refuse_the_cls_scene_embedding():
    torch.manual_seed(5)
    for module, channels, step_dim in (
        (gram_m_binaural, 2, 6144),
        (gram_m_binaural_time, 2, 768),
        (gram_m_ambisonics, 4, 6144),
    ):
        model = module.load_model("random", sample_rate=16000)
        assert model.timestamp_embedding_size == step_dim == model.scene_embedding_size
        audio = 0.1 * torch.randn(2, 16000 * 3 // 2, channels)
        embeddings, times = module.get_timestamp_embeddings(audio, model)
        scene = module.get_scene_embeddings(audio, model)
        assert embeddings.shape[:2] == times.shape and embeddings.shape[2] == step_dim
        torch.testing.assert_close(scene, embeddings.mean(dim=1), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="causal.*sees no audio"):
            module.load_model("random", scene_embedding="cls")


def test_variant_defaults_are_the_papers_sixteen_blocks_of_width_768():
    encoder = GramMEncoder()
    assert len(encoder.blocks) == 16 and encoder.embed_dim == 768
    mixer = encoder.blocks[0].mixer
    assert (mixer.d_state, mixer.headdim, mixer.nheads, mixer.ngroups) == (128, 64, 24, 1)
    assert isinstance(encoder.norm, torch.nn.LayerNorm)
