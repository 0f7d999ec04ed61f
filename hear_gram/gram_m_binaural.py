"""HEAR API of GRAM-M-Binaural: 16 Mamba-2 blocks over 16 x 8 patches; 6144-d steps, 80 ms."""

from hear_gram.hear_api import DEFAULT_SAMPLE_RATE, variant_module_api

VARIANT = "gram-m-binaural"
load_model, get_scene_embeddings, get_timestamp_embeddings = variant_module_api(VARIANT)
__all__ = ["DEFAULT_SAMPLE_RATE", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
