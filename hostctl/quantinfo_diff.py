"""Compare two quant_info.json files (pytorch_nndct's format, written by both quantizers) tensor by tensor.

    result = diff_files("portable/quant_info.json", "vai/quant_info.json")
    result.identical, result.param_mismatches, result.output_match_ratio

Pure: reads the two files (or takes already-parsed documents) and returns a frozen dataclass; printing and exit
codes belong to the CLI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECTIONS = ("param", "output", "input")
# nndct's documents are 4 levels deep ({"param": {name: [[bits, fp]]}}); comparing, printing and --json's output
# of anything much deeper would recurse to Python's limit.
MAX_DEPTH = 32
Doc = dict[str, Any]


class QuantInfoError(ValueError):
    """A file that is not a quant_info.json document."""


@dataclass(frozen=True)
class Mismatch:
    section: str  # "param", "output" or "input"
    name: str  # the tensor's name, e.g. "Unet::nndct_relu_2"
    a: list[int] | None  # [bit_width, fix_position] in the first file, None when it lacks the tensor
    b: list[int] | None


@dataclass(frozen=True)
class SectionDiff:
    section: str
    common: int  # tensors in both files
    equal: int  # of those, with the same bit width and fix position
    only_a: tuple[str, ...] = ()
    only_b: tuple[str, ...] = ()
    differ: tuple[Mismatch, ...] = ()

    @property
    def match_ratio(self) -> float:
        """Share of the common tensors that agree (1.0 when there are none)."""
        return self.equal / self.common if self.common else 1.0


@dataclass(frozen=True)
class QuantInfoDiff:
    sections: dict[str, SectionDiff]
    metadata: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (a, b) where they differ

    @property
    def identical(self) -> bool:
        """Same tensors with the same fix positions (metadata such as version may still differ)."""
        return all(not s.only_a and not s.only_b and not s.differ for s in self.sections.values())

    @property
    def param_mismatches(self) -> tuple[Mismatch, ...]:
        return self.sections["param"].differ

    @property
    def output_match_ratio(self) -> float:
        return self.sections["output"].match_ratio

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json output."""
        return {
            "identical": self.identical,
            "sections": {
                name: {"common": s.common, "equal": s.equal, "match_ratio": s.match_ratio,
                       "only_a": list(s.only_a), "only_b": list(s.only_b),
                       "differ": [{"name": m.name, "a": m.a, "b": m.b} for m in s.differ]}
                for name, s in self.sections.items()
            },
            "metadata": {k: {"a": a, "b": b} for k, (a, b) in self.metadata.items()},
        }


def load(path: str | Path) -> Doc:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise QuantInfoError(f"cannot read {p}: {e.strerror or e}") from e
    except ValueError as e:
        raise QuantInfoError(f"{p} is not JSON: {e}") from e
    except RecursionError:
        raise QuantInfoError(f"{p}: nested too deeply to be a quant_info.json document") from None
    depth = _depth(doc, MAX_DEPTH)
    if depth > MAX_DEPTH:
        raise QuantInfoError(f"{p}: nested more than {MAX_DEPTH} levels deep, where a quant_info.json "
                             "document is nested 4")
    _check(doc, str(p))
    return doc


def _depth(doc: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON document, without recursion, counted up to limit + 1."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check(doc: Any, where: str) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("param"), dict) or \
            not isinstance(doc.get("output"), dict):
        raise QuantInfoError(f"{where} is not a quant_info.json document (needs 'param' and 'output' tables)"
                             )


def _entry(value: Any) -> list[int] | None:
    """nndct stores [[bit_width, fix_position]] per tensor (one pair per output of the op); older files a bare
    pair. The first pair is what both quantizers write for single-output ops."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        value = value[0]
    if isinstance(value, list) and len(value) >= 2:
        return [value[0], value[1]]
    return None


def _section(name: str, a: dict[str, Any], b: dict[str, Any]) -> SectionDiff:
    common = [k for k in a if k in b]
    differ = []
    for k in common:
        ea, eb = _entry(a[k]), _entry(b[k])
        if ea != eb:
            differ.append(Mismatch(name, k, ea, eb))
    return SectionDiff(section=name, common=len(common), equal=len(common) - len(differ),
                       only_a=tuple(k for k in a if k not in b), only_b=tuple(k for k in b if k not in a),
                       differ=tuple(differ))


def diff(a: Doc, b: Doc) -> QuantInfoDiff:
    """Compare two parsed quant_info documents."""
    _check(a, "the first document")
    _check(b, "the second document")
    sections = {s: _section(s, a.get(s) or {}, b.get(s) or {}) for s in SECTIONS}
    meta = {}
    for key in sorted((set(a) | set(b)) - set(SECTIONS)):
        if a.get(key) != b.get(key):
            meta[key] = (a.get(key), b.get(key))
    return QuantInfoDiff(sections=sections, metadata=meta)


def diff_files(path_a: str | Path, path_b: str | Path) -> QuantInfoDiff:
    return diff(load(path_a), load(path_b))
