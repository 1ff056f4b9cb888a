"""Batch sources: each process's part of a global batch, and views that do not depend on the
number of processes."""

import numpy as np
import pytest
import torch

from symclr_ft.data.batches import MemorySource, make_source, views_for
from symclr_ft.config import load_config
from symclr_ft.errors import UserError


def config(shards, *extra):
    return load_config(None, [f"data.shards={shards}", "data.image_size=32", "data.batch_size=8",
                              "views.preset=drawing", *extra])


def test_two_processes_split_each_global_batch_and_see_the_same_views(synth_shards):
    cfg = config(synth_shards)
    cpu = torch.device("cpu")
    one = MemorySource(cfg, 0, 1, cpu)
    halves = [MemorySource(cfg, rank, 2, cpu) for rank in (0, 1)]
    steps = one.start_epoch(3)
    assert [h.start_epoch(3) for h in halves] == [steps, steps]
    for step in (0, steps - 1):
        whole = one.batch(step)
        parts = [h.batch(step) for h in halves]
        indices = [p.indices[p.valid.numpy()] for p in parts]
        assert sorted(np.concatenate(indices).tolist()) == sorted(whole.indices.tolist())
        assert not set(indices[0]) & set(indices[1])
        x_whole = views_for(whole, cfg, 3, step, rank=0)
        n = len(whole.labels)
        for rank, part in enumerate(parts):
            x = views_for(part, cfg, 3, step, rank=rank)
            rows = part.rows[part.valid]
            b = len(part.labels)
            for view in (0, 1):  # views are stacked: first all first views, then all second
                got = x[view * b : view * b + b][part.valid]
                assert torch.allclose(got, x_whole[view * n + rows], atol=1e-6)


def test_a_global_batch_that_does_not_split_evenly_is_refused(synth_shards):
    with pytest.raises(UserError, match="data.batch_size=8 is the global batch and must divide evenly over 3"):
        make_source(config(synth_shards), 0, 3, torch.device("cpu"))
