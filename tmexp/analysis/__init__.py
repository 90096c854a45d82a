"""Analysis of tmexp runs: load TensorBoard logs into pandas, compare by time and steps, plot, report, seed stats.

Modules, in the order data flows through them:

- ``eventfile``: fast exact reader of one event file (vectorised CRC check and scalar decoding).
- ``loading``: find runs (split folders merged), Hydra labels/config, units converted -> one long DataFrame.
- ``tables``: x axes (wall / training minutes, frames, updates), common windows, checkpoint, race and run tables.
- ``stats``: estimates (IQM with stratified bootstrap CIs at 5+ seeds, else the median), permutation tests with Holm's
  correction, probability of improvement, verdicts, the seeds planner, seed groups.
- ``document``: titled sections (tables, their notes and figures); ``render``: a table as md / csv / rst.
- ``plots``: one metric per figure, a seed group as its centre (and band) with its seeds as thin lines; interval
  plots at the end of each common window.
- ``machine``: each run's learner rate, launch and load; the projected wall-time axis.
- ``pipeline``: loaded runs -> comparisons, sections and figures; the one path ``tmexp.compare`` and the write-up take.
- ``study``: an experiment's runs.yaml and its runs; ``sentences``: key results generated from the tables;
  ``provenance``: config-difference and hardware tables; ``writeup``: the README.md (``python -m tmexp.report``).
- ``export``: what the write-up reads from each run, in one compact file beside runs.yaml (``--export``), so it
  regenerates without the run directories.
- ``sweep``: one row per multirun job; ``synthetic``: small logs with known contents.
"""
