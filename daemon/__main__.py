"""``python -m corral.daemon --master HOST:PORT ...``: run the worker daemon."""

from __future__ import annotations

import argparse
import sys

from corral.daemon import worker


def run() -> int:
    """Parse the command line and run the worker."""
    parser = argparse.ArgumentParser(
        prog="corral-worker", description="The corral worker daemon: runs programs for a master."
    )
    worker.add_arguments(parser)
    return worker.main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(run())
