"""Scoring HEAR models on tasks: the heareval runners (``heareval_embed``,
``heareval_predict``), our direction probe (``doa_probe``), s(m) (``scoring``), the report
(``report``), what makes scores reproducible (``determinism``), their confidence intervals
(``intervals``) and the command that runs them all (``evaluate``); the DCASE SELD metrics
(``seld_metrics``) and the command that scores output CSVs with them (``seld_score``). The
log-mel baseline is the HEAR module ``natheear_tasks.baselines.logmel``."""
