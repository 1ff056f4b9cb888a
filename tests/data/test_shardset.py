"""Sampler invariants as properties over random class histograms and process counts."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from symclr_ft.data.shardset import (
    check_batch_size,
    class_unique_batches,
    epoch_batches,
    greedy_unique_batches,
    local_part,
    m_per_class_batches,
    random_batches,
)
from symclr_ft.errors import UserError

histograms = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=25)


def labels_from(histogram, seed=0):
    labels = np.repeat(np.arange(len(histogram)), histogram)
    return np.random.default_rng(seed).permutation(labels)


@settings(max_examples=150, deadline=None)
@given(histogram=histograms, batch_size=st.integers(2, 32), world=st.integers(1, 4),
       seed=st.integers(0, 2**31), epoch=st.integers(0, 100))
def test_class_unique_sampler_invariants(histogram, batch_size, world, seed, epoch):
    labels = labels_from(histogram, seed)
    batches = class_unique_batches(labels, batch_size, seed, epoch)
    # exact length, and the fewest batches any class-unique schedule can have
    assert len(batches) == max(max(histogram), math.ceil(len(labels) / batch_size))
    # every index exactly once per epoch
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(labels)))
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        assert len(set(labels[batch].tolist())) == len(batch)  # classes unique in the global batch
        parts = [local_part(batch, r, world) for r in range(world)]
        sizes = {len(p[0]) for p in parts}
        assert sizes == {math.ceil(len(batch) / world)}  # equal rows on every process
        owned = np.concatenate([p[0][p[1]] for p in parts])
        assert sorted(owned.tolist()) == sorted(batch.tolist())  # disjoint, together the batch
    # deterministic for (seed, epoch)
    again = class_unique_batches(labels, batch_size, seed, epoch)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


@settings(max_examples=50, deadline=None)
@given(histogram=histograms, batch_size=st.integers(2, 32), seed=st.integers(0, 1000))
def test_random_sampler_uses_every_index_once(histogram, batch_size, seed):
    labels = labels_from(histogram)
    batches = random_batches(labels, batch_size, seed, 3)
    assert len(batches) == math.ceil(len(labels) / batch_size)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(labels)))


@settings(max_examples=50, deadline=None)
@given(histogram=histograms, m=st.integers(1, 4), seed=st.integers(0, 1000))
def test_m_per_class_batches(histogram, m, seed):
    labels = labels_from(histogram)
    batches = m_per_class_batches(labels, 16, m, seed, 0)
    assert len(batches) == math.ceil(len(labels) / 16)
    for batch in batches:
        counts = np.bincount(labels[batch])
        present = counts[counts > 0]
        for cls in np.flatnonzero(counts):
            assert counts[cls] == min(m, histogram[cls])
        assert len(present) == max(1, min(len(histogram), 16 // m))


def test_epochs_differ_and_seeds_differ():
    labels = labels_from([5] * 10)
    a = epoch_batches("class_unique", labels, 4, 0, 0)
    b = epoch_batches("class_unique", labels, 4, 0, 1)
    c = epoch_batches("class_unique", labels, 4, 1, 0)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_the_seeds_silent_truncation_is_gone():
    """The seed stopped each epoch once fewer than 32 classes had crops left; on a histogram
    like the real one (one class 940 of 2,606) every crop must still be used."""
    rng = np.random.default_rng(0)
    histogram = [940] + list(rng.integers(2, 90, 39))
    labels = labels_from(histogram)
    batches = class_unique_batches(labels, 32, 0, 0)
    assert sum(len(b) for b in batches) == len(labels)
    assert len(batches) == 940


def test_batch_larger_than_class_count_is_refused():
    labels = labels_from([3] * 5)
    with pytest.raises(UserError, match="exceeds the 5 classes"):
        check_batch_size("class_unique", labels, 8, False)
    check_batch_size("random", labels, 8, True)
    with pytest.raises(UserError, match="mask_same_class"):
        check_batch_size("random", labels, 8, False)


def test_streaming_batches_are_class_unique_and_complete():
    rng = np.random.default_rng(0)
    labels = rng.choice(6, size=200, p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    stream = ((torch.zeros(1), int(label)) for label in labels)
    seen = []
    for _, batch_labels in greedy_unique_batches(stream, 4, max_pending=16):
        assert len(set(batch_labels.tolist())) == len(batch_labels) <= 4
        seen += batch_labels.tolist()
    assert sorted(seen) == sorted(labels.tolist())
