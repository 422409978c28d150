"""Benefit lab: train the real decoder on real text and measure what dim, depth, heads and each flag buy.

``corpus`` (text, split, tokenizer), ``records`` (the probe row type and its files), ``harness`` (one
training run), ``probes`` (the four probes: scaling, stability, extrapolation, heads), ``analysis``
(power-law fit and summaries), ``jobs`` (probes in the worker's child process), ``cli`` (``xtlens probe``).
"""
