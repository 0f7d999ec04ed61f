"""hear_gram: spatial audio foundation models (GRAM, CAT) behind the HEAR API.

``hear_gram`` itself is GRAM-Binaural; one submodule per variant (``hear_gram.gram_binaural``,
``hear_gram.gram_binaural_time``, ``hear_gram.gram_ambisonics``, ``hear_gram.gram_clean``,
``hear_gram.cat_binaural``, ``hear_gram.cat_ambisonics``, ``hear_gram.cat_clean``).
"""

from hear_gram.gram_binaural import (
    DEFAULT_SAMPLE_RATE,
    get_scene_embeddings,
    get_timestamp_embeddings,
    load_model,
)

__all__ = ["DEFAULT_SAMPLE_RATE", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
__version__ = "0.1.0"
