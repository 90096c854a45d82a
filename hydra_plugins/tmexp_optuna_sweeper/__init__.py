"""``hydra/sweeper=optuna``: tmexp's Optuna sweeper (the study itself lives in ``tmexp.launch.search``)."""
