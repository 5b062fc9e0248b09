"""inspect_<target>.txt as vai_q_pytorch's Inspectors write it (pytorch_nndct/hardware/inspector.py and
hardware_v3/inspector.py _dump_body, the same layout), read back into inspect.json's nodes: how
`hostctl inspect --runtime docker` turns the image's own (compiler-backed) Inspector's answer into the same files
the rule-based emulation writes."""

import ast
from typing import Any, Dict, List, Optional

from container_payload.graph.trace import first_user_frame

SEPARATOR = "=" * 160


def parse_nodes(text: str) -> List[Dict[str, Any]]:
    """The node sections, in the file's order: name, op type, output shapes (NHWC, as written), device (`dpu` or
    `cpu`), hardware constraint, node messages (sorted: nndct keeps them in a set), input node names, and the
    user's line from the source range (its stack trace)."""
    if "\ngraph name: " not in text:
        raise ValueError("no 'graph name:' section: not an inspect_<target>.txt of vai_q_pytorch")
    nodes = []
    body = text.split("\ngraph name: ", 1)[1]
    for block in body.split(SEPARATOR + "\n")[1:]:
        node: Optional[Dict[str, Any]] = None
        section = None
        stack: List[str] = []
        for line in block.splitlines():
            if section == "source":
                stack.append(line)
            elif line.startswith("node name: "):
                node = {"name": line[len("node name: "):], "op": None, "shape": None, "device": None,
                        "constraint": None, "messages": [], "source": None, "inputs": []}
            elif node is None:
                continue
            elif line.startswith("input nodes: "):
                node["inputs"] = [str(n) for n in _literal(line[len("input nodes: "):], [])]
            elif line.startswith("op type: "):
                node["op"] = line[len("op type: "):]
            elif line.startswith("outputs shape: "):
                node["shape"] = _shapes(line[len("outputs shape: "):])
            elif line.startswith("assigned device: "):
                node["device"] = line[len("assigned device: "):].strip().lower()
            elif line.startswith("hardware constraints: "):
                node["constraint"] = line[len("hardware constraints: "):]
            elif line == "node messages:":
                section = "messages"
            elif line == "op attributes:":
                section = "attributes"
            elif line.startswith("source range:"):
                section = "source"
            elif line.startswith("  ") and section == "messages":
                node["messages"].append(line[2:])
            elif not line.startswith("  "):
                section = None
        if node is not None:
            node["messages"].sort()
            node["source"] = first_user_frame(stack) if stack else None
            nodes.append(node)
    return nodes


def _literal(text: str, default: Any) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return default


def _shapes(text: str) -> List[List[int]]:
    """`[[1, 8, 8, 16]]` (the rule-based Inspector: the list of output shapes), or `[1, 8, 8, 16]` and, for
    several outputs, `[1, 4],[1, 4]` (hardware_v3 joins each output's shape with commas)."""
    value = _literal(text, [])
    if isinstance(value, list) and all(isinstance(d, int) for d in value):
        return [value]
    return [list(v) for v in value if isinstance(v, (list, tuple))] if isinstance(value, (list, tuple)) else []
