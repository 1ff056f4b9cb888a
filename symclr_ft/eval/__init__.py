"""Evaluation floor: embedding a split, k-NN episodes (pure), metrics with intervals, reports."""
