"""HEAR API of GRAM-Ambisonics: 16 x 8 patches over 4 log-mels + 3 intensity vectors (AmbiX)."""

from hear_gram.hear_api import DEFAULT_SAMPLE_RATE, variant_module_api

VARIANT = "gram-ambisonics"
load_model, get_scene_embeddings, get_timestamp_embeddings = variant_module_api(VARIANT)
__all__ = ["DEFAULT_SAMPLE_RATE", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
