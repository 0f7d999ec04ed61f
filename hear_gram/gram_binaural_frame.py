"""HEAR API of GRAM-Binaural as released with patch ("frame") masking (16 x 8 patches)."""

from hear_gram.hear_api import DEFAULT_SAMPLE_RATE, variant_module_api

VARIANT = "gram-binaural-frame"
load_model, get_scene_embeddings, get_timestamp_embeddings = variant_module_api(VARIANT)
__all__ = ["DEFAULT_SAMPLE_RATE", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
