"""One-line errors: library messages quoted without colour codes or a cut mid-word."""

from symclr_ft.errors import library_message


def test_terminal_colour_codes_and_line_breaks_are_removed():
    err = RuntimeError("Weights only load failed. \x1b[1mdo this only if you trust it\x1b[0m.\n\tmore")
    assert library_message(err) == "Weights only load failed. do this only if you trust it. more"


def test_a_long_message_ends_at_a_sentence_or_a_word():
    sentences = "The first sentence is here. " + "then a very long explanation " * 20
    assert library_message(RuntimeError(sentences)) == "The first sentence is here."
    words = "word " * 100
    quoted = library_message(ValueError(words), limit=50)
    assert quoted.endswith("word...") and len(quoted) <= 53


def test_an_empty_message_names_the_exception():
    assert library_message(EOFError()) == "EOFError"


def test_a_crafted_checkpoint_message_is_quoted_cleanly(tmp_path):
    import argparse

    import pytest
    import torch

    from symclr_ft.errors import UserError
    from symclr_ft.models.backbones import read_checkpoint

    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "ns.pt")
    with pytest.raises(UserError) as err:
        read_checkpoint(tmp_path / "ns.pt")
    message = str(err.value)
    assert "\x1b" not in message and "\n" not in message and "refused to load" in message


def test_bounded_options_accept_their_range_and_refuse_the_rest_in_one_line(capsys):
    import math

    import pytest

    from symclr_ft.errors import ArgumentParser, UserError, bounded_float, bounded_int

    p = ArgumentParser(prog="cmd")
    p.add_argument("--n", type=bounded_int(0, 10))
    p.add_argument("--iou", type=bounded_float(0.0, 1.0))
    p.add_argument("--tpr", type=bounded_float(0.0, 1.0, above=True))
    args = p.parse_args(["--n", "10", "--iou", "0", "--tpr", "1e-9"])
    assert (args.n, args.iou, args.tpr) == (10, 0.0, 1e-9)
    refused = {
        ("--n", "-1"): "argument --n: '-1' is outside the range [0, 10]",
        ("--n", "1.5"): "argument --n: expected a whole number, got '1.5'",
        ("--n", "9" * 5000): "argument --n: expected a whole number, got '99999",
        ("--iou", "5"): "argument --iou: '5' is outside the range [0, 1]",
        ("--iou", "nan"): "argument --iou: expected a finite number, got 'nan'",
        ("--iou=-inf",): "argument --iou: expected a finite number",
        ("--iou", "1e400"): "argument --iou: expected a finite number",
        ("--tpr", "0"): "argument --tpr: '0' is outside the range (0, 1]",
        ("--n=--",): "argument --n: expected a value, got '--'",  # argparse alone gave []
    }
    for argv, words in refused.items():
        with pytest.raises(UserError) as err:
            p.parse_args(list(argv))
        message = str(err.value)
        assert words in message and "\n" not in message and len(message) < 200, message
    assert math.isinf(bounded_float(0.0, finite=False)("inf"))
