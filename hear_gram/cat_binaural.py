"""HEAR API of CAT-Binaural: conv stem and ViT over 2-channel log-mels;
6144-d steps every 80 ms."""

from torch import Tensor

from hear_gram import hear_api
from hear_gram.hear_api import HearModel

VARIANT = "cat-binaural"


def load_model(model_file_path: str = "", **options) -> HearModel:
    """Load cat-binaural (see :func:`hear_gram.hear_api.load_model` for options)."""
    return hear_api.load_model(VARIANT, model_file_path, **options)


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    return hear_api.get_scene_embeddings(audio, model)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    return hear_api.get_timestamp_embeddings(audio, model)
