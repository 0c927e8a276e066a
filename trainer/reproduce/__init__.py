"""The paper-comparison tool behind scripts/reproduce.py.

- :mod:`spec`: recipes, ablations, suites and planned runs (data only);
- :mod:`suites` / :mod:`ablations`: the named suites and SwitchLoRA ablations;
- :mod:`corpus`: the cpu-small suite's local data (Shakespeare texts, 4k BPE, shards);
- :mod:`plan`: runs and their full configs from a suite and the command line;
- :mod:`runner`: run folders and the trainer launched as a subprocess;
- :mod:`progress`: ETA lines; :mod:`suite_run`: the loop over runs;
- :mod:`costs`: parameter counts, optimizer state, gradient and pool bytes from shapes;
- :mod:`results`, :mod:`report`, :mod:`plot`: results.json, report.md and the PNGs.
"""
