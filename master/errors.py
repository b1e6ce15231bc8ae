"""The failure every verb of the control plane raises: one line for the operator."""

from __future__ import annotations


class VerbError(Exception):
    """A verb failed; the message is one line for the operator."""
