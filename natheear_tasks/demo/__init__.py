"""The main job: synthetic HEAR tasks (``synth``) and the end-to-end run (``job``) behind
``natheear-tasks demo``."""
