"""parse_size: memory sizes as operators write them, and the ones refused."""

from __future__ import annotations

import pytest

from corral.transport.sizes import MAX_SIZE, SizeError, parse_size

K, M, G, T, P = (1024**i for i in range(1, 6))


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("1", 1),
        ("1K", K),
        ("512M", 512 * M),
        ("250M", 250 * M),
        ("2G", 2 * G),
        ("1.5G", 3 * G // 2),
        (".5G", G // 2),
        ("3T", 3 * T),
        ("1P", P),
        # i and/or B: the same powers of 1024
        ("2GiB", 2 * G),
        ("2GB", 2 * G),
        ("2Gi", 2 * G),
        ("100KiB", 100 * K),
        # any case, spaces around and before the unit
        ("2g", 2 * G),
        ("2gib", 2 * G),
        (" 2G ", 2 * G),
        ("2 G", 2 * G),
        ("10B", 10),
        ("1024P", 1 << 60),  # the largest taken
    ],
)
def test_sizes_accepted(text: str, size: int):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("10Q", "use a number with K, M, G or T"),
        ("", "use a number with K, M, G or T"),
        ("G", "use a number with K, M, G or T"),
        ("2X", "use a number with K, M, G or T"),
        ("1e9", "use a number with K, M, G or T"),
        ("2 G B", "use a number with K, M, G or T"),
        ("1,5G", "use a number with K, M, G or T"),
        ("nan", "use a number with K, M, G or T"),
        ("inf", "use a number with K, M, G or T"),
        ("5i", "use a number with K, M, G or T"),  # "i" without a unit
        ("-1", "it must be positive"),
        ("-2G", "it must be positive"),
        ("0", "it must be at least one byte"),
        ("0G", "it must be at least one byte"),
        ("0.5", "it must be at least one byte"),
        ("1025P", "larger than any machine"),
        ("9" * 400, "larger than any machine"),
    ],
)
def test_sizes_refused(text: str, why: str):
    with pytest.raises(SizeError) as refused:
        parse_size(text)
    message = str(refused.value)
    assert message == f"bad size {text!r}: {message.split(': ', 1)[1]}"
    assert why in message and "\n" not in message


def test_a_size_error_is_a_value_error():
    assert issubclass(SizeError, ValueError)
    assert MAX_SIZE == 1 << 60
