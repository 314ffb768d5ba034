"""Experiments: many runs, where they execute, and what their results say.

runs        a run (configs + seed) and its stable id; `train_runs`, one row per finished run
spec        sweep specs: TOML grids -> the distinct runs (torch-free)
sweeps      `run_sweep`: plan, skip what is done, run the rest, record each result
executors   where runs execute: this process, worker processes, or a Ray cluster
database    `ResultsDB`: the SQLite results database
stats       mean, CI, paired tests with Benjamini-Hochberg over seeds, their power
findings    a study's findings per dataset and regime (`qtl study`, docs/study.md)
reproduce   the paper's comparison (`qtl reproduce`)
"""
