"""segkit.errors' helpers for messages that wrap another exception."""

from __future__ import annotations

from segkit.errors import described, first_line


def test_described_is_the_type_and_the_first_line_of_the_message() -> None:
    error = RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore detail\n")
    assert first_line(error) == "CUDA out of memory. Tried to allocate 2 GiB"
    assert described(error) == "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"


def test_an_empty_message_leaves_the_type_alone() -> None:
    for error in (RuntimeError(), ValueError("  \n "), KeyError("")):
        assert first_line(error) in ("", "''")  # KeyError quotes its key
    assert described(RuntimeError()) == "RuntimeError"
    assert described(ValueError(" \n")) == "ValueError"


def test_the_line_is_cut_at_the_limit() -> None:
    error = OSError("x" * 500)
    assert first_line(error) == "x" * 300
    assert described(error, 20) == "OSError: " + "x" * 20


def test_plural_says_one_without_s_and_takes_an_irregular_plural():
    from segkit.errors import plural

    assert plural(1, "epoch") == "1 epoch"
    assert plural(0, "epoch") == "0 epochs" and plural(2, "epoch") == "2 epochs"
    assert plural(1, "process", "processes") == "1 process"
    assert plural(3, "process", "processes") == "3 processes"
