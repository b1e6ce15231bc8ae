"""Memory sizes as operators write them: ``250M``, ``2G``, ``1.5G``, ``4096``.

One parser for ``corral worker --mem`` and ``corral submit --mem``.  Units
are powers of 1024 (``K``, ``M``, ``G``, ``T``, optionally followed by
``i`` and/or ``B``: ``2GiB`` and ``2GB`` are both 2 * 1024**3), as
`master.text.human_bytes` prints them.  A bare number is bytes.  Standard
library only.
"""

from __future__ import annotations

import math
import re

_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMGTP]?)(i?B?)\s*", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
MAX_SIZE = 1 << 60  # one exbibyte: anything larger is a typo


class SizeError(ValueError):
    """Not a size; the message says what was wrong with it."""


def parse_size(text: str) -> int:
    """Bytes in ``text`` (``250M`` -> 262144000); `SizeError` naming the problem.

    Zero, negative, fractional bytes and absurd sizes are refused.
    """
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        if text.strip().startswith("-"):
            raise SizeError(f"bad size {text!r}: it must be positive")
        raise SizeError(f"bad size {text!r}: use a number with K, M, G or T (e.g. 512M, 2G)")
    number, unit, suffix = m.groups()
    if suffix.lower() == "i" and not unit:
        raise SizeError(f"bad size {text!r}: use a number with K, M, G or T (e.g. 512M, 2G)")
    value = float(number) * 1024 ** _POWERS[unit.upper()]
    if not math.isfinite(value) or value > MAX_SIZE:
        raise SizeError(f"bad size {text!r}: larger than any machine")
    size = int(value)
    if size < 1:
        raise SizeError(f"bad size {text!r}: it must be at least one byte")
    return size
