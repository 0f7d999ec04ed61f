"""HEAR API of GRAM-M-Ambisonics: 16 Mamba-2 blocks over 16 x 8 patches of AmbiX features."""

from hear_gram.hear_api import DEFAULT_SAMPLE_RATE, variant_module_api

VARIANT = "gram-m-ambisonics"
load_model, get_scene_embeddings, get_timestamp_embeddings = variant_module_api(VARIANT)
__all__ = ["DEFAULT_SAMPLE_RATE", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
