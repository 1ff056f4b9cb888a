"""distributed.py's choices that do not need several processes."""

from __future__ import annotations

import pytest
import torch

from symclr_ft.distributed import native_precision


@pytest.mark.parametrize("choice", ["no", "bf16", "fp16"])
def test_an_explicit_precision_is_kept(choice):
    assert native_precision(choice) == choice


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (True, False, "bf16"), (False, True, "bf16"), (False, False, "no"),
])
def test_auto_is_bf16_only_on_a_cpu_that_computes_it_natively(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_precision("auto") == expected


def test_auto_follows_the_device_that_embeds(monkeypatch):
    """A CPU asked for by name is judged as a CPU even beside a GPU; other devices get fp32."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert native_precision("auto") == "bf16"
    assert native_precision("auto", "cuda") == "bf16"
    assert native_precision("auto", "cpu") == "no"
    assert native_precision("auto", "mps") == "no"


def test_the_old_name_still_works_with_a_warning():
    import symclr_ft.distributed as distributed

    with pytest.warns(DeprecationWarning, match="native_precision"):
        assert distributed.inference_precision is native_precision
