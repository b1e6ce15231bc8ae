"""``corral node revoke NAME``: cut a node off and refuse its certificates from then on.

Wire::

    POST /v1/node/revoke {"node": NAME}
    -> {"node": NAME, "revoked": N}     N: the certificates refused from now on

The node's connection is dropped at once and it shows as lost; it can come
back only by enrolling again with the cluster token (remove its
``ROOT/tls/node.crt`` and start it with the token).  404 if the node has
no certificate on record.
"""

from __future__ import annotations

from corral.master.verbs.base import Args, Limits, Output, Plane, Reply, Shape, Verb

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse
    from typing import Annotated, Any


class RevokeRequest(Shape):
    node: Annotated[str, Limits(min_length=1, max_length=64)]


class Node(Verb[RevokeRequest]):
    name = "node"
    summary = "manage one node's membership: revoke its certificate"
    description = (
        "revoke NAME: disconnect the node at once and refuse its certificate from\n"
        "then on. It can enroll again only with the cluster token."
    )
    examples = "corral node revoke n3"
    method = "POST"
    path = "/v1/node/revoke"
    shape = RevokeRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("action", choices=["revoke"], help="what to do (revoke)")
        p.add_argument("node", metavar="NAME", help="the node")

    def request(self, args: Args) -> dict[str, Any]:
        return {"node": args.node}

    async def call(self, plane: Plane, req: RevokeRequest) -> Reply:
        count = plane.master.revoke_node(req.node)
        return {"node": req.node, "revoked": count}

    def text(self, args: Args, reply: Reply) -> Output:
        n = reply.get("revoked", 0)
        return Output(
            [f"{reply.get('node')}: disconnected; {n} certificate{'s' * (n != 1)} revoked"]
        )


VERB = Node()
