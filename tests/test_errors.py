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
