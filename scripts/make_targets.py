#!/usr/bin/env python3
"""Regenerate container_payload/inspector/targets.json from the Vitis AI sources.

    scripts/make_targets.py [--mirror GIT_DIR] [--rev REV] [--output PATH] [--check]

Reads target_factory's target definitions (src/vai_runtime/target_factory/targets/*.prototxt) at REV of a Vitis-AI
git directory (default: the bare mirror at $HOSTCTL_VITIS_AI_MIRROR or /work/.mirror/Xilinx+Vitis-AI/repo) with
protobuf's own text-format parser against the schema of that revision (src/target.proto, compiled by `protoc` to a
descriptor set, so no generated code is kept), and writes them as JSON for the payload, which has no protobuf:

- each target is the `vitis.ai.Target` message with the proto's field names in field-number order (the order
  protobuf's printers use), enums by name, and proto3's rule for what is present: a scalar only when it differs
  from its default, a repeated field only when not empty, a sub-message only when it holds something. The last is
  what nndct's DPUTargetHelper.has_attr and has_*_engine test (`ByteSize() > 0`), so "key present" is their "has".
- its fingerprint is computed as target_factory.cpp's get_fingerprint does: type code << 56 | isa_version << 48 |
  feature_code, with the type codes read from that file's type2int.
- targets are sorted by name; the header records the commit and the source paths.

Needs git, protoc and the protobuf Python package (`pip install protobuf`); host-side only. --check exits 1 when
the file differs from what the sources give.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "container_payload" / "inspector" / "targets.json"
DEFAULT_MIRROR = os.environ.get("HOSTCTL_VITIS_AI_MIRROR", "/work/.mirror/Xilinx+Vitis-AI/repo")
FORMAT = 1
TF = "src/vai_runtime/target_factory"
SCHEMA = f"{TF}/src/target.proto"
TARGETS_DIR = f"{TF}/targets"
FACTORY = f"{TF}/src/target_factory.cpp"
CMAKE = f"{TF}/src/CMakeLists.txt"
# target_factory's create() builds these when a fingerprint is not registered; targets.py follows them.
SYNTHESIS = [f"{TF}/src/create_target_{n}.cpp" for n in ("v2", "DPUCZDX8G_ISA1", "DPUCVDX8G_ISA2", "DPUCVDX8G_ISA3",
                                                        "DPUCV2DX8G_ISA0", "DPUCV2DX8G_ISA1")]
WIDTH = 118


def git(mirror: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", mirror, *args], check=True, capture_output=True, text=True).stdout


def target_class(proto_text: str) -> Any:
    """The vitis.ai.Target message class, built from target.proto through protoc's descriptor set."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "target.proto").write_text(proto_text)
        out = Path(tmp, "target.pb")
        subprocess.run(["protoc", f"--descriptor_set_out={out}", f"-I{tmp}", "target.proto"], check=True)
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("vitis.ai.Target"))


def to_dict(message: Any) -> dict[str, Any]:
    """A message as a dict: fields present under proto3's rules, in field-number order, enums by name."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():  # set fields only, sorted by field number
        # protobuf >= 5 has is_repeated; older versions only the label
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if field.message_type is not None:
            if repeated:
                out[field.name] = [to_dict(item) for item in value]
            elif value.ByteSize() > 0:  # present but empty is not "has" for nndct
                out[field.name] = to_dict(value)
        elif field.enum_type is not None:
            names = field.enum_type.values_by_number
            out[field.name] = [names[v].name for v in value] if repeated else names[value].name
        else:
            out[field.name] = list(value) if repeated else value
    return out


def type_codes(factory_cpp: str) -> dict[str, int]:
    """target_factory.cpp's type2int: `if (type == "DPUCZDX8G") ret = 1U;` and so on."""
    codes = {name: int(code) for name, code in re.findall(r'type == "(\w+)"\)\s*ret = (\d+)U;', factory_cpp)}
    if not codes:
        raise SystemExit(f"no type2int table found in {FACTORY}")
    return codes


def ipu_only_patterns(cmake: str) -> list[str]:
    """The prototxt globs CMakeLists.txt leaves out unless ENABLE_IPU is on (the AMD_AIE2 overlays)."""
    block = re.search(r"if\(NOT ENABLE_IPU\)(.*?)endif", cmake, re.S)
    return re.findall(r"/targets/([^)\s]+\.prototxt)", block.group(1)) if block else []


def fingerprint(codes: dict[str, int], target: dict[str, Any]) -> int:
    """target_factory.cpp's get_fingerprint, with its checks."""
    kind, isa, feature = target.get("type", ""), target.get("isa_version", 0), target.get("feature_code", 0)
    if kind not in codes or feature >> 48 or isa >> 8:
        raise SystemExit(f"{target.get('name')}: invalid type, isa_version or feature_code")
    return codes[kind] << 56 | isa << 48 | feature


def build(mirror: str, rev: str = "HEAD") -> dict[str, Any]:
    from google.protobuf import text_format

    commit = git(mirror, "rev-parse", f"{rev}^{{commit}}").strip()

    def show(path: str) -> str:
        return git(mirror, "show", f"{commit}:{path}")

    message_class = target_class(show(SCHEMA))
    codes = type_codes(show(FACTORY))
    ipu_globs = ipu_only_patterns(show(CMAKE))
    entries, ipu_only, seen = [], [], {}
    for path in git(mirror, "ls-tree", "--name-only", commit, f"{TARGETS_DIR}/").split():
        if not path.endswith(".prototxt"):
            continue
        message = message_class()
        text_format.Parse(show(path), message)
        target = to_dict(message)
        name = target.get("name")
        if not name or not target.get("type"):
            raise SystemExit(f"{path}: uninitialized name or type")  # as register_targets refuses it
        fp = fingerprint(codes, target)
        for key, value in (("name", name), ("fingerprint", fp)):
            if (key, value) in seen:  # register_h refuses a second registration of either
                raise SystemExit(f"{path}: {key} {value} already registered by {seen[key, value]}")
            seen[key, value] = path
        file = path.rsplit("/", 1)[1]
        if any(fnmatch.fnmatch(file, pattern) for pattern in ipu_globs):
            ipu_only.append(name)
        entries.append({"prototxt": file, "fingerprint": hex(fp), "target": target})
    entries.sort(key=lambda entry: entry["target"]["name"])
    return {
        "format": FORMAT,
        "generated_by": "scripts/make_targets.py",
        "source": {
            "repository": "https://github.com/Xilinx/Vitis-AI",
            "commit": commit,
            "describe": git(mirror, "describe", "--tags", commit).strip(),
            "commit_date": git(mirror, "show", "-s", "--format=%cI", commit).strip(),
            "schema": SCHEMA,
            "targets": f"{TARGETS_DIR}/*.prototxt",
            "fingerprint": f"{FACTORY} (type2int, get_fingerprint)",
            "synthesis": SYNTHESIS,
            "build": CMAKE,
        },
        "conventions": [
            "Each target is the vitis.ai.Target message of the schema, with its field names in field-number order.",
            "Enums are written by name. Presence follows proto3: a scalar only when not its default (0, '', false),",
            "a repeated field only when not empty, a sub-message only when not empty (nndct: ByteSize() > 0).",
            "fingerprint = type_codes[type] << 56 | isa_version << 48 | feature_code (target_factory.cpp).",
        ],
        "type_codes": dict(sorted(codes.items(), key=lambda item: item[1])),
        "ipu_only": ipu_only,  # registered only in a target_factory built with ENABLE_IPU
        "targets": entries,
    }


def render(value: Any, indent: int = 0, used: int = 0) -> str:
    """JSON with every container that fits on its line written on one line, the rest one item a line."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or not value or used + len(flat) + 1 <= WIDTH:  # + 1: a comma
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            head = f"{pad}{json.dumps(key)}: "
            items.append(head + render(item, indent + 2, len(head)))
    elif all(not isinstance(item, (dict, list)) for item in value):  # scalars: as many a line as fit
        lines: list[list[str]] = [[]]
        for item in map(json.dumps, value):
            if lines[-1] and len(pad) + len(", ".join(lines[-1] + [item])) + 1 > WIDTH:
                lines.append([])
            lines[-1].append(item)
        items = [pad + ", ".join(line) for line in lines]
    else:
        items = [pad + render(item, indent + 2, len(pad)) for item in value]
    brackets = "{}" if isinstance(value, dict) else "[]"
    return brackets[0] + "\n" + ",\n".join(items) + "\n" + " " * indent + brackets[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=DEFAULT_MIRROR, help="a Vitis-AI git directory (bare is fine)")
    parser.add_argument("--rev", default="HEAD", help="the revision to read (default HEAD)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the file is not up to date")
    args = parser.parse_args()
    document = build(args.mirror, args.rev)
    text = render(document) + "\n"
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        print(f"{args.output}: {'up to date' if current == text else 'differs from the sources'}")
        return 0 if current == text else 1
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.output)
    print(f"wrote {args.output}: {len(document['targets'])} targets at {document['source']['describe']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
