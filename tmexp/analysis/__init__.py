"""Analysis of tmexp runs: load TensorBoard logs into pandas, compare by time and steps, plot, report, seed stats.

Modules, in the order data flows through them:

- ``eventfile``: fast exact reader of one event file (vectorised CRC check and scalar decoding).
- ``loading``: find runs under directories, merge files and split directories, Hydra labels/config -> DataFrame.
- ``tables``: x axes (wall / training minutes, frames, updates), common windows, checkpoint and race tables.
- ``stats``: IQM, stratified bootstrap CIs and probability of improvement (rliable's definitions), seed groups.
- ``summary``: per-run summary and seed-group tables; ``document``/``render``: titled tables as md / csv / rst.
- ``plots``: one metric per figure; ``sweep``: one row per multirun job; ``report``: experiments/<name>/README.md.
- ``synthetic``: small logs with known contents; ``benchmark``: load speed against tbparse.
"""
