"""GRAM pretraining on naturalistic scenes (runs from a checkout: ``python -m training.pretrain``).

Data flow, one module per step: ``config`` -> ``data`` (clips) -> ``scenes`` (mixing on the
device) -> ``samples`` (features, crops) -> ``masking`` -> ``mae`` (encoder, ``decoder``,
loss) -> ``pretrain`` (the loop, with ``checkpointing``) -> ``export``; ``synthetic`` writes
toy data.
"""
