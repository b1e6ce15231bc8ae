"""corral's command line: ``python -m corral`` and the ``corral`` console script.

Argument parsing and dispatch only.  Everything heavier (the master, the
worker daemon, the dashboard) is imported lazily by the verb that needs it,
so the client verbs (``corral ps``, ``corral kill``, ...) start fast and
speak to the master's HTTP control API with the standard library alone.
"""

__version__ = "0.1.0"
