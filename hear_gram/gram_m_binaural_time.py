"""HEAR API of GRAM-M-Binaural, time-masked: 128 x 2 patches; 768-d steps every 20 ms."""

from hear_gram.hear_api import DEFAULT_SAMPLE_RATE, variant_module_api

VARIANT = "gram-m-binaural-time"
load_model, get_scene_embeddings, get_timestamp_embeddings = variant_module_api(VARIANT)
__all__ = ["DEFAULT_SAMPLE_RATE", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
