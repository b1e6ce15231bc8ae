"""Field types shared by the verbs' request shapes, with their limits.

Every string and list a client sends is bounded, and NUL, which cannot
travel in an argv or a path, is refused.
"""

from __future__ import annotations

from typing import Annotated

from corral.master.verbs.base import MAX_ARGS, MAX_ENV, MAX_ITEMS, Limits

_NO_NUL = r"^[^\x00]*\Z"

Text = Annotated[str, Limits(max_length=4096)]
Arg = Annotated[str, Limits(max_length=128 * 1024, pattern=_NO_NUL)]  # Linux's MAX_ARG_STRLEN
Argv = Annotated[list[Arg], Limits(max_length=MAX_ARGS)]
FilePath = Annotated[str, Limits(max_length=4096, pattern=r"^/[^\x00]*\Z")]  # absolute
FilePaths = Annotated[list[FilePath], Limits(max_length=MAX_ITEMS)]
Names = Annotated[list[Text], Limits(max_length=MAX_ITEMS)]
Key = Annotated[str, Limits(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*\Z")]
SearchPath = Annotated[str, Limits(max_length=64 * 1024, pattern=_NO_NUL)]  # LD_LIBRARY_PATH
EnvName = Annotated[str, Limits(max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*\Z")]
Env = Annotated[dict[EnvName, Arg], Limits(max_length=MAX_ENV)]  # a program's own variables
