"""GRAM-M pretraining: the toy config trains, exports and embeds; reference weights (encoder
and ``decoder_v`` decoder) continue pretraining; the ``mamba`` section is checked."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from reference_layout import ReferenceGramM
from training_support import reference_decoder_state, toy_overrides

from hear_gram import gram_m_binaural
from hear_gram.features import normalize
from training import config
from training.config import ConfigError, MambaConfig, ModelConfig
from training.export import main as export_main
from training.mae import build_model, init_from
from training.pretrain import train

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "training" / "configs" / "gram_m_toy.yaml"


def toy_config(data: Path, **fields) -> config.Config:
    return config.load(TOY, toy_overrides(data, **{"train.steps": 30, "optim.lr": 3e-3, **fields}))


def test_toy_gram_m_pretrains_exports_and_embeds(toy_data, tmp_path):
    run = tmp_path / "run"
    train(toy_config(toy_data), run)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5]), losses
    out = tmp_path / "exported"
    assert export_main([str(run), str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["variant"] == "gram-m-binaural" and saved["encoder"]["d_state"] == 16
    model = gram_m_binaural.load_model(str(out), sample_rate=16000)
    embeddings, times = gram_m_binaural.get_timestamp_embeddings(
        0.1 * torch.randn(1, 40000, 2), model
    )
    assert embeddings.shape == (1, 32, 8 * 32) and torch.isfinite(embeddings).all()


def test_resumed_gram_m_run_ends_with_the_same_weights_and_exports_them(toy_data, tmp_path):
    common = {"train.log_every": 2, "train.checkpoint_every": 2}
    straight = train(toy_config(toy_data, **common, **{"train.steps": 4}), tmp_path / "a")
    run = tmp_path / "b"
    train(toy_config(toy_data, **common, **{"train.steps": 2}), run)
    resumed = train(toy_config(toy_data, **common, **{"train.steps": 4}), run, resume=True)
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0, msg=name)
    assert export_main([str(run), str(tmp_path / "exported")]) == 0
    loaded = gram_m_binaural.load_model(str(tmp_path / "exported"), sample_rate=16000)
    for name, value in resumed.encoder.state_dict().items():
        torch.testing.assert_close(loaded.encoder.state_dict()[name], value, rtol=0, atol=0)


def test_reference_gram_m_checkpoint_continues_pretraining(tmp_path):
    """Encoder and ``decoder_v`` decoder of a reference GRAM-M file load strictly."""
    torch.manual_seed(0)
    model_cfg = ModelConfig(
        variant="gram-m-binaural", embed_dim=32, depth=2, decoder_dim=32, decoder_depth=1,
        decoder_windows=[5, 0],
    )  # fmt: skip
    mamba = MambaConfig(d_state=16, headdim=16)
    reference = ReferenceGramM(2, (16, 8), dim=32, depth=2)
    decoder_source = build_model(model_cfg, mamba).decoder
    state = {k: v.detach() for k, v in reference.state_dict().items()}
    state.update(
        {re.sub(r"^decoder_blocks\.", "decoder_v.", k): v
         for k, v in reference_decoder_state(decoder_source).items()}
    )  # fmt: skip
    torch.save({"state_dict": state}, tmp_path / "gramm.ckpt")
    target = build_model(model_cfg, mamba)
    assert "reference" in init_from(target, str(tmp_path / "gramm.ckpt"), "gram-m-binaural")
    for key, value in decoder_source.state_dict().items():
        torch.testing.assert_close(target.decoder.state_dict()[key], value)
    x = normalize(torch.randn(1, 2, 128, 200))
    with torch.no_grad():
        torch.testing.assert_close(
            target.encoder.forward_tokens(x).double(), reference(x), rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("mamba.headdim", 7, "headdim"),
        ("mamba.ngroups", 5, "ngroups"),
        ("mamba.norm", "batchnorm", "layernorm or rmsnorm"),
        ("mamba.d_state", 0, "at least 1"),
    ],
)
def test_bad_mamba_settings_are_refused(toy_data, field, value, match):
    with pytest.raises(ConfigError, match=match):
        toy_config(toy_data, **{field: value})
