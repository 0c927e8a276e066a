"""The benchmark behind scripts/bench.py.

- :mod:`run`: one case built and stepped through the trainer, and its measurements;
- :mod:`memory`: the bytes of parameters, gradients and optimizer state, and peak memory;
- :mod:`counts`: the gradient traffic a config's parameter counts imply;
- :mod:`report`: ratios against full-rank and the markdown tables.
"""
