"""``corral token rotate``: replace the cluster's enrollment token.

Wire::

    POST /v1/token/rotate {}
    -> {"token_file": PATH}

Enrolled nodes are not disturbed: they connect with their certificates.
A node that has yet to enroll needs the new token.  The API's bearer token
is the same token, so clients that were given the old one by
``$CORRAL_TOKEN`` need the new one too; those reading ``STATE_DIR/token``
pick it up by themselves.
"""

from __future__ import annotations

from corral.master.verbs.base import Args, Output, Plane, Reply, Shape, Verb

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any


class RotateRequest(Shape):
    """No parameters."""


class Token(Verb[RotateRequest]):
    name = "token"
    summary = "rotate the enrollment token (enrolled nodes are not disturbed)"
    description = (
        "rotate: write a new cluster token in the master's state directory. Nodes\n"
        "that have enrolled keep connecting with their certificates; new nodes\n"
        "enroll with the new token. The old one stops working at once, for the API too."
    )
    examples = "corral token rotate"
    method = "POST"
    path = "/v1/token/rotate"
    shape = RotateRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("action", choices=["rotate"], help="what to do (rotate)")

    def request(self, args: Args) -> dict[str, Any]:
        return {}

    async def call(self, plane: Plane, req: RotateRequest) -> Reply:
        return {"token_file": str(plane.master.rotate_token())}

    def text(self, args: Args, reply: Reply) -> Output:
        return Output([f"new enrollment token in {reply.get('token_file')}"])


VERB = Token()
