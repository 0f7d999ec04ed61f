"""HEAR API of CAT-Clean: conv stem and ViT over 1-channel log-mels;
6144-d steps every 80 ms."""

from hear_gram.hear_api import DEFAULT_SAMPLE_RATE, variant_module_api

VARIANT = "cat-clean"
load_model, get_scene_embeddings, get_timestamp_embeddings = variant_module_api(VARIANT)
__all__ = ["DEFAULT_SAMPLE_RATE", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
