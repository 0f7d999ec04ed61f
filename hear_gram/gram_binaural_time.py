"""HEAR API of GRAM-Binaural, time-masked: 128 x 2 patches; 768-d steps every 20 ms."""

from torch import Tensor

from hear_gram import hear_api
from hear_gram.hear_api import HearModel

VARIANT = "gram-binaural-time"


def load_model(model_file_path: str = "", **options) -> HearModel:
    """Load gram-binaural-time (see :func:`hear_gram.hear_api.load_model` for options)."""
    return hear_api.load_model(VARIANT, model_file_path, **options)


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    return hear_api.get_scene_embeddings(audio, model)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    return hear_api.get_timestamp_embeddings(audio, model)
