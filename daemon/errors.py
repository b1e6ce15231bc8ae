"""The one exception type a request handler turns into an `Error` reply."""

from __future__ import annotations


class Refusal(Exception):
    """A request the worker will not or cannot do; the message goes to the master."""
