"""How inspection's readers (the terminal, the picture) name what nndct's deployable graph holds."""

import re

# the layout permutes nndct's layout transform inserts: `<node>_swim_transpose_<i>` before a node that cannot take
# NHWC, `<node>_sink_transpose_<i>` after (deploy.py)
_INSERTED = re.compile(r"_(sink|swim)_transpose_\d+$")


def inserted_permute(name: str) -> bool:
    """A permute nndct inserted, not an op of the model."""
    return bool(_INSERTED.search(name))


def op_kind(op: str) -> str:
    """`nndct_conv2d` -> `conv2d`, `aten::upsample_bicubic2d` -> `upsample_bicubic2d`."""
    return op.replace("nndct_", "").replace("aten::", "")
