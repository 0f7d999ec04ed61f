"""natheear_tasks: HEAR tasks made naturalistic (binaural, Ambisonics), localization and SELD
tasks from simulated and recorded spatial audio, and the scoring of HEAR models on them."""
