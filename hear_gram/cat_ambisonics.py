"""HEAR API of CAT-Ambisonics: conv stem and ViT over 7 channels (4 log-mels, 3 intensity vectors);
6144-d steps every 80 ms."""

from hear_gram.hear_api import variant_module_api

VARIANT = "cat-ambisonics"
load_model, get_scene_embeddings, get_timestamp_embeddings = variant_module_api(VARIANT)
