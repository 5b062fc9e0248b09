"""DPU target definitions as data: Vitis AI target_factory's registered targets and its synthesis of unregistered
fingerprints, for the inspector's filters.

targets.json (written by scripts/make_targets.py from the Vitis-AI sources named in its header) holds every
`vitis.ai.Target` of target_factory's targets/*.prototxt. A target is that message as a dict with the proto's field
names (src/target.proto), enums by name, and proto3 presence: a scalar only when it differs from its default
(base_id 0, argmax false and isa_version 0 are absent), a repeated field only when not empty, a sub-message only
when not empty. The last is exactly nndct's test (DPUTargetHelper.has_attr / has_*_engine: `ByteSize() > 0`), so
`target.has("pool_engine")` is its has_pool_engine. Read fields with `target.get(...)` and a default.

Lookup mirrors target_factory (src/target_factory.cpp): by registered name, or by fingerprint = type code << 56 |
isa_version << 48 | feature_code, where an unregistered fingerprint of a DPU family with a create_target_*.cpp is
synthesized from its feature-code bits as target_factory does (e.g. KV260's 0x101000016010407 ->
DPUCZDX8G_ISA1_B4096_0101000016010407). Every failure is a ValueError that says what was asked for and what exists.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets.json")
FORMAT = 1

# --board -> the DPU target of that board's Vitis AI 3.5 deployment (the name to give the inspector); the arch.json
# directories are container_payload/job.py's BOARDS. Sources, in the Vitis-AI repository:
BOARDS = {
    # docsrc/source/docs/quickstart/mpsoc.rst ("support KV260/ZCU102/ZCU104"), as of the 3.5 release (b7953a2a,
    # removed afterwards by d5e5ea17): `resnet18_quant.py ... --inspect --target DPUCZDX8G_ISA1_B4096`. The boards'
    # own DPU reports 0x101000016010407 (examples/waa/apps/*/pre_built_flow/DPUCZDX8G_zcu102/config_file/arch.json):
    # B4096's but for bit 30, the save engine's argmax; by_fingerprint synthesizes it, as target_factory does.
    "kv260": "DPUCZDX8G_ISA1_B4096",
    "zcu102": "DPUCZDX8G_ISA1_B4096",
    "zcu104": "DPUCZDX8G_ISA1_B4096",
    # docsrc/source/docs/quickstart/vck190.rst, branch 3.0 (08284f6e; 3.5's docs have no VCK190 quick start):
    # `--inspect --target DPUCVDX8G_ISA3_C32B6`.
    "vck190": "DPUCVDX8G_ISA3_C32B6",
    # docsrc/source/docs/quickstart/vek280.rst and v70.rst at HEAD: `--inspect --target DPUCV2DX8G_ISA1_C20B14`; the
    # xmodels compiled for them (examples/custom_operator/*/model/compiled/{vek280,v70}/) carry dpu_name
    # DPUCV2DX8G_ISA1_C20B14 and dpu_fingerprint 0x901400044000e44, its registered fingerprint.
    "vek280": "DPUCV2DX8G_ISA1_C20B14",
    "v70": "DPUCV2DX8G_ISA1_C20B14",
}

FingerprintLike = Union[int, str]


@dataclass(frozen=True)
class Target:
    """One DPU target: the identifying fields, and the whole message (read-only) in `proto`."""

    name: str
    type: str
    isa_version: int
    feature_code: int
    fingerprint: int
    proto: Mapping[str, Any] = field(repr=False, hash=False)
    registered: bool = True  # False: synthesized from an unregistered fingerprint

    @classmethod
    def from_proto(cls, proto: Mapping[str, Any], registered: bool = True) -> "Target":
        kind, isa, feature = proto.get("type", ""), proto.get("isa_version", 0), proto.get("feature_code", 0)
        return cls(proto["name"], kind, isa, feature, fingerprint_of(kind, isa, feature), _freeze(proto), registered)

    @property
    def fingerprint_hex(self) -> str:
        """As arch.json writes it, e.g. "0x101000056010407"."""
        return hex(self.fingerprint)

    def get(self, *path: Union[str, int], default: Any = None) -> Any:
        """The field at path, e.g. get("conv_engine", "conv_limit", "kernel_size") -> "1-16"; default if absent."""
        node: Any = self.proto
        for key in path:
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                return default
        return node

    def has(self, engine: str) -> bool:
        """nndct's has_<engine>: the engine (any sub-message) is present and not empty."""
        return engine in self.proto

    def bank_group(self, name: str) -> Optional[Mapping[str, Any]]:
        """The bank group of that name (the first, as nndct's check_conv_weights_bank_depth takes it)."""
        return next((group for group in self.proto.get("bank_group", ()) if group.get("name") == name), None)

    def banks(self, engine: str, role: str) -> List[Mapping[str, Any]]:
        """The bank groups an engine names in one of its bank fields (input_bank, output_bank, weight_bank,
        bias_bank; load_engine's output_bank...), in the engine's order; names without a group are skipped."""
        names = self.get(engine, role, default=())
        groups = (self.bank_group(name) for name in ((names,) if isinstance(names, str) else names))
        return [group for group in groups if group is not None]

    def to_dict(self) -> Dict[str, Any]:
        """The message as plain JSON-ready dicts and lists."""
        return _thaw(self.proto)


def parse_range(text: str) -> List[int]:
    """A target limit such as "1-16", "0-15" or "1-4,8" as the list of its values: nndct's
    DPUTargetHelper.parse_range, whose list its messages print ("... not in DPU supported range([1, 2, ...])")."""
    values: List[int] = []
    for item in text.split(","):
        low, dash, high = item.partition("-")
        try:
            values.extend(range(int(low), int(high) + 1) if dash else [int(item)])
        except ValueError:
            raise ValueError("bad range {!r} in target limit {!r}".format(item, text)) from None
    return values


def in_range(text: str, value: int) -> bool:
    """Whether value lies within a target limit such as "1-16" (see parse_range)."""
    return value in parse_range(text)


def fingerprint_of(kind: str, isa_version: int, feature_code: int) -> int:
    """target_factory's get_fingerprint: type code << 56 | isa_version << 48 | feature_code, with its checks."""
    codes = _type_codes()
    if kind not in codes:
        raise ValueError("unknown DPU type {!r}; target_factory knows {}".format(kind, ", ".join(codes)))
    if feature_code >> 48 or feature_code < 0:
        raise ValueError("feature code {:#x} does not fit in 48 bits".format(feature_code))
    if isa_version >> 8 or isa_version < 0:
        raise ValueError("isa version {:#x} does not fit in 8 bits".format(isa_version))
    return codes[kind] << 56 | isa_version << 48 | feature_code


def names() -> List[str]:
    """The registered target names, sorted."""
    return sorted(_registry().by_name)


def source() -> Mapping[str, Any]:
    """Where targets.json comes from: the Vitis-AI commit and source paths."""
    return _freeze(_data()["source"])


def by_name(name: str) -> Target:
    """A registered target by name. Also takes the name of a synthesized target (e.g.
    "DPUCZDX8G_ISA1_B4096_0101000016010407"), which target_factory itself only creates from the fingerprint."""
    registry = _registry()
    if name in registry.by_name:
        return registry.by_name[name]
    tail = name.rpartition("_")[2]
    if len(tail) == 16:
        try:
            target = synthesize(int(tail, 16))
        except ValueError:
            pass
        else:
            if target.name == name:
                return target
    raise ValueError(_unknown_name_message(name))


def by_fingerprint(fingerprint: FingerprintLike) -> Target:
    """The target of a fingerprint (an int or a "0x..." string as in arch.json): the registered one, else the one
    target_factory synthesizes for its DPU family (see synthesize)."""
    value = _parse_fingerprint(fingerprint)
    registered = _registry().by_fingerprint.get(value)
    return registered if registered is not None else synthesize(value)


def synthesize(fingerprint: int) -> Target:
    """target_factory's create() for an unregistered fingerprint: the create_target_*.cpp of its DPU family builds
    the target from the feature-code bits (ARCH, pixel parallelism, bank groups, optional features)."""
    codes = _type_codes()
    type_code, isa = fingerprint >> 56, (fingerprint >> 48) & 0xFF
    kind = next((name for name, code in codes.items() if code == type_code), None)
    where = "fingerprint {:#018x}".format(fingerprint)
    if kind is None:
        raise ValueError("{}: unknown DPU type code {}; known: {}".format(
            where, type_code, ", ".join("{}={}".format(code, name) for name, code in codes.items())))
    create = _SYNTHESIZERS.get((kind, isa))
    if create is None:
        isas = sorted(i for k, i in _SYNTHESIZERS if k == kind)
        same_type = ["{} ({})".format(t.name, t.fingerprint_hex) for t in _registry().by_name.values()
                     if t.type == kind]
        raise ValueError("{} ({} ISA {}) is not registered, and target_factory synthesizes {}; registered {} targets: "
                         "{}".format(where, kind, isa, "{} targets for ISA {} only".format(
                             kind, ", ".join(map(str, isas))) if isas else "no {} targets".format(kind),
                             kind, ", ".join(sorted(same_type)) or "none"))
    return Target.from_proto(_prune(create(fingerprint)), registered=False)


def from_arch_json(path: str) -> Target:
    """The target an arch.json names, as vai_c_xir reads it: {"fingerprint": "0x..."} (the boards' files, e.g.
    {"fingerprint":"0x101000016010407"}) or {"target": "<name>"}."""
    try:
        with open(path, encoding="utf-8") as file:
            arch = json.load(file)
    except ValueError as exc:
        raise ValueError("{}: not JSON ({})".format(path, exc)) from None
    if not isinstance(arch, dict) or not ({"fingerprint", "target"} & set(arch)):
        raise ValueError('{}: an arch.json holds {{"fingerprint": "0x..."}} or {{"target": "<name>"}}'.format(path))
    try:
        found = [by_fingerprint(arch["fingerprint"])] if "fingerprint" in arch else []
        found += [by_name(arch["target"])] if "target" in arch else []
    except ValueError as exc:
        raise ValueError("{}: {}".format(path, exc)) from None
    if len({t.fingerprint for t in found}) > 1:
        raise ValueError("{}: fingerprint {} is {}, but target is {}".format(
            path, arch["fingerprint"], found[0].name, found[1].name))
    return found[0]


def resolve(spec: str) -> Target:
    """What a user may give as a target: a name, a "0x..." fingerprint, a path to an arch.json, or a board."""
    if spec.lower().startswith("0x"):
        return by_fingerprint(spec)
    if spec.endswith(".json") or os.path.isfile(spec):
        return from_arch_json(spec)
    if spec.lower() in BOARDS:
        return by_name(BOARDS[spec.lower()])
    return by_name(spec)


# --- the registry: targets.json, read once ------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _data() -> Mapping[str, Any]:
    with open(DATA, encoding="utf-8") as file:
        data = json.load(file)
    if data.get("format") != FORMAT:
        raise ValueError("{}: format {!r}, this code reads format {}; regenerate it with scripts/make_targets.py"
                         .format(DATA, data.get("format"), FORMAT))
    return data


def _type_codes() -> Dict[str, int]:
    return _data()["type_codes"]


@dataclass(frozen=True)
class _Registry:
    by_name: Dict[str, Target]
    by_fingerprint: Dict[int, Target]


@lru_cache(maxsize=None)
def _registry() -> _Registry:
    registry = _Registry({}, {})
    for entry in _data()["targets"]:
        target = Target.from_proto(entry["target"])
        if target.fingerprint_hex != entry["fingerprint"]:
            raise ValueError("{}: {} is listed with fingerprint {}, its fields give {}".format(
                DATA, target.name, entry["fingerprint"], target.fingerprint_hex))
        registry.by_name[target.name] = target
        registry.by_fingerprint[target.fingerprint] = target
    return registry


def _parse_fingerprint(fingerprint: FingerprintLike) -> int:
    if isinstance(fingerprint, int) and not isinstance(fingerprint, bool):
        value = fingerprint
    elif isinstance(fingerprint, str) and fingerprint.strip().lower().startswith("0x"):
        try:
            value = int(fingerprint.strip(), 16)
        except ValueError:
            raise ValueError("bad fingerprint {!r}: not a hex number".format(fingerprint)) from None
    else:
        raise ValueError('bad fingerprint {!r}: give an int or a "0x..." hex string'.format(fingerprint))
    if not 0 <= value < 1 << 64:
        raise ValueError("bad fingerprint {!r}: not a 64-bit value".format(fingerprint))
    return value


def _unknown_name_message(name: str) -> str:
    known = names()
    folded = {n.lower(): n for n in known}
    close = [folded[m] for m in difflib.get_close_matches(name.lower(), list(folded), n=4, cutoff=0.6)]
    if len(name) >= 3:
        close += [n for n in known if name.lower() in n.lower()]
    close = list(dict.fromkeys(close))[:6]
    message = "unknown DPU target {!r}".format(name)
    if name.lower() in BOARDS:
        return message + "; {} is a board, its target is {}".format(name, BOARDS[name.lower()])
    if len(name) >= 15 and all(c in "0123456789abcdefABCDEF" for c in name):  # a type code is at bit 56
        return message + '; a fingerprint is written "0x{}"'.format(name)
    if close:
        return message + "; close matches: {}".format(", ".join(close))
    return message + "; known targets: {}".format(", ".join(known))


def _freeze(value: Any) -> Any:
    """Read-only copies: dicts as mapping proxies, lists as tuples (targets are shared by every caller)."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _prune(value: Any) -> Any:
    """proto3 presence, as scripts/make_targets.py writes the registered targets: default scalars, empty repeated
    fields and empty sub-messages are absent (an element of a repeated message field stays, even if empty)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = _prune(item)
            if item not in (None, 0, "", [], {}):  # False == 0: dropped too
                out[key] = item
        return out
    if isinstance(value, list):
        return [_prune(item) if isinstance(item, dict) else item for item in value]
    return value


# --- synthesis of unregistered fingerprints, after target_factory's src/create_target_*.cpp ------------------------
# Each function follows its C++ line by line, building the fields in proto field-number order; the dicts go through
# _prune, as protobuf would drop what the C++ sets to a default (argmax false, pixel_parallel 0). Where the C++ would
# index past a table (an ARCH or RDEPTH it does not know), these raise ValueError.

PAD_LIMIT = {"pad_left": "0-15", "pad_right": "0-255", "pad_top": "0-15", "pad_bottom": "0-255"}
DW_ALU_TYPES = ["dwconv", "prelu", "avg_pool", "max_pool", "leaky_relu", "max_reduce", "dwconv_no_bias", "hsigmoid"]


def _bit(fingerprint: int, mask: int) -> int:
    return (fingerprint & mask) // (mask & -mask)


def _pick(table: Tuple[int, ...], index: int, what: str, fingerprint: int) -> int:
    if index >= len(table):
        raise ValueError("fingerprint {:#018x}: invalid {}={:#x} (target_factory knows 0..{}); check the hardware "
                         "configuration".format(fingerprint, what, index, len(table) - 1))
    return table[index]


def _bank(name: str, kind: str, base_id: int, num: int, width: int, depth: int) -> Dict[str, Any]:
    return {"name": name, "base_id": base_id, "bank_num": num, "bank_width": width, "bank_depth": depth, "type": kind}


def _image_banks(count: int, num: int, width: int, depth: int) -> List[Dict[str, Any]]:
    return [_bank("VB{}".format(i), "Virtual", i * num, num, width, depth) for i in range(count)]


def _head(fingerprint: int, kind: str, name: str) -> Dict[str, Any]:
    return {"name": name, "type": kind, "isa_version": (fingerprint >> 48) & 0xFF,
            "feature_code": fingerprint & 0xFFFFFFFFFFFF}


def _stride_out_h(pp: int, wp: int) -> str:
    return "1-{}".format(4 if wp == 1 or pp // wp >= 4 else pp // wp)


def _dpuczdx8g_isa0(fp: int) -> Dict[str, Any]:  # create_target_v2.cpp
    arch = fp & 0xF
    pp = _pick((4, 4, 8, 4, 8, 8, 8, 8, 4, 2, 2), arch, "ARCH", fp)
    icp = ocp = _pick((8, 10, 8, 12, 10, 12, 14, 16, 4, 6, 8), arch, "ARCH", fp)
    pl_pp, dw_pp, el_pp = _bit(fp, 0xF00), _bit(fp, 0xF000), _bit(fp, 0xF0000)
    img_bg, ld_augm, cv_lkrl, cv_rl6 = _bit(fp, 0x3000000), _bit(fp, 0x4000000), _bit(fp, 0x10000000), \
        _bit(fp, 0x20000000)
    pl_avg, dw_rl6, el_mult, pl_dsm = _bit(fp, 0x40000000), _bit(fp, 0x80000000), _bit(fp, 0x1000000000), \
        _bit(fp, 0x2000000000)
    vbs = ["VB{}".format(i) for i in range(img_bg)]
    base = img_bg * pp
    banks = _image_banks(img_bg, pp, icp, 2048) + [_bank("CONVW", "Param", base, ocp, icp, 2048)]
    base += ocp
    if dw_pp:
        banks.append(_bank("DWCONVW", "Param", base, 1, icp, 2048))
        base += 1
    banks.append(_bank("BIAS", "Param", base, 1, icp, 2048))
    target = _head(fp, "DPUCZDX8G", "DPUCZDX8G_ISA{}_B{}_{:016X}".format((fp >> 48) & 0xFF, pp * icp * ocp * 2, fp))
    target.update(bank_group=banks, load_engine={"channel_parallel": icp, "output_bank": vbs},
                  save_engine={"channel_parallel": icp, "input_bank": vbs})
    target["conv_engine"] = {
        "input_channel_parallel": icp, "output_channel_parallel": ocp, "pixel_parallel": pp, "input_bank": vbs,
        "weight_bank": "CONVW", "bias_bank": "BIAS",
        "channel_augmentation": {"channel_num": icp * 2} if ld_augm else {},
        "nonlinear": {"nonlinear_type": ["relu"] + ["leaky_relu"] * cv_lkrl + ["relu_six"] * cv_rl6},
        "output_bank": vbs, "conv_limit": {"kernel_size": "1-16", "stride": "1-8"}}
    target["eltwise_engine"] = {
        "channel_parallel": icp, "pixel_parallel": el_pp, "input_bank": vbs, "output_bank": vbs,
        "nonlinear": {"nonlinear_type": ["relu"]}, "elew_type": ["add"] + ["mult"] * el_mult}
    target["pool_engine"] = {
        "channel_parallel": icp, "pixel_parallel": pl_pp, "input_bank": vbs, "output_bank": vbs,
        "pool_type": ["max"] + ["avg"] * pl_avg + ["max_reduce"] * pl_dsm, "nonlinear": {"nonlinear_type": ["relu"]},
        "avg_limit": {"kernel_size": "2-8", "stride": "1-8"} if pl_avg else {},
        "max_limit": {"kernel_size": "1-8", "stride": "1-8"}}
    if dw_pp:
        target["dwconv_engine"] = {
            "channel_parallel": icp, "pixel_parallel": dw_pp, "input_bank": vbs, "output_bank": vbs,
            "weight_bank": "DWCONVW", "bias_bank": "BIAS",
            "nonlinear": {"nonlinear_type": ["relu"] + ["relu_six"] * dw_rl6},
            "dwconv_limit": {"kernel_size": "1-16", "stride": "1-8"}}
    return target


def _dpuczdx8g_isa1(fp: int) -> Dict[str, Any]:  # create_target_DPUCZDX8G_ISA1.cpp
    arch = fp & 0xF
    pp = _pick((4, 4, 8, 4, 8, 8, 8, 8, 4, 2, 2, 2), arch, "ARCH", fp)
    icp = ocp = _pick((8, 10, 8, 12, 10, 12, 14, 16, 4, 6, 8, 4), arch, "ARCH", fp)
    alu_pp, img_bg, ld_augm = _bit(fp, 0xF00), _bit(fp, 0x3000000), _bit(fp, 0x4000000)
    cv_lkrl, dw_lkrl, sv_am = _bit(fp, 0x10000000), _bit(fp, 0x20000000), _bit(fp, 0x40000000)
    cv_wp, alu_wp = 2 ** _bit(fp, 0x300000000), 2 ** _bit(fp, 0xC00000000)
    vbs = ["VB{}".format(i) for i in range(img_bg)]
    base = img_bg * pp
    banks = _image_banks(img_bg, pp, icp, 2048) + [
        _bank("CONVW", "Param", base, ocp, icp, 2048), _bank("DWCONVW", "Param", base + ocp, 1, icp, 2048),
        _bank("BIAS", "Param", base + ocp + 1, 1, icp, 2048)]
    target = _head(fp, "DPUCZDX8G", "DPUCZDX8G_ISA{}_B{}_{:016X}".format((fp >> 48) & 0xFF, pp * icp * ocp * 2, fp))
    target.update(bank_group=banks, load_engine={"channel_parallel": icp, "output_bank": vbs},
                  save_engine={"channel_parallel": icp, "input_bank": vbs, "argmax": sv_am == 1})
    target["conv_engine"] = {
        "input_channel_parallel": icp, "output_channel_parallel": ocp, "pixel_parallel": pp, "input_bank": vbs,
        "weight_bank": "CONVW", "bias_bank": "BIAS",
        "channel_augmentation": {"channel_num": icp * 2} if ld_augm else {},
        "nonlinear": {"nonlinear_type": ["relu"] + ["leaky_relu"] * cv_lkrl + ["relu_six"]},
        "output_bank": vbs,
        "conv_limit": {"kernel_size": "1-16", "stride": "1-8", "stride_out_h": _stride_out_h(pp, cv_wp)}}
    target["eltwise_engine"] = {
        "channel_parallel": icp, "pixel_parallel": alu_pp, "input_bank": vbs, "output_bank": vbs,
        "nonlinear": {"nonlinear_type": ["relu"]}, "elew_type": ["add", "mult"]}
    target["alu_engine"] = {
        "channel_parallel": icp, "pixel_parallel": alu_pp, "input_bank": vbs, "output_bank": vbs,
        "weight_bank": "DWCONVW", "bias_bank": "BIAS", "alu_type": DW_ALU_TYPES + ["w16b0"],
        "nonlinear": {"nonlinear_type": ["relu"] + ["leaky_relu"] * dw_lkrl + ["relu_six"]},
        "alu_limit": {"kernel_size": "1-256", "stride": "1-256", "stride_out_h": _stride_out_h(pp, alu_wp)},
        "pad_limit": dict(PAD_LIMIT)}
    return target


def _dpucvdx8g(fp: int, isa3: bool) -> Dict[str, Any]:  # create_target_DPUCVDX8G_ISA2.cpp and _ISA3.cpp
    arch = fp & 0xF
    pp, icp = _pick((8, 8, 8), arch, "ARCH", fp), _pick((16, 16, 16), arch, "ARCH", fp)
    ocp = _pick((16, 32, 64), arch, "ARCH", fp)
    wgt_bank_num, batch, img_bg, ld_augm = 16, _bit(fp, 0xF0), _bit(fp, 0x3000000), _bit(fp, 0x4000000)
    cv_lkrl = _bit(fp, 0x10000000)
    if isa3:
        alu_mode, alu_pp, el_pp, rdepth = "3D", _bit(fp, 0xF00), _bit(fp, 0xF00), _bit(fp, 0xF000)
        cv_rl6, dw_lkrl, sv_am, el_mult = 1, _bit(fp, 0x20000000), _bit(fp, 0x40000000), 1
        alu_wp = 2 ** _bit(fp, 0xC00000000)
    else:
        alu_mode = ("NONE", "ALL", "3D")[_pick((0, 1, 2), _bit(fp, 0xF00), "ALU", fp)]
        alu_pp, el_pp, rdepth = _bit(fp, 0xF000), _bit(fp, 0xF0000), _bit(fp, 0xF00000000)
        cv_rl6, dw_lkrl, sv_am, el_mult = _bit(fp, 0x20000000), 0, 0, _bit(fp, 0x1000000000)
    img_rd = _pick((13, 13, 12, 13, 12, 14, 14), rdepth, "RDEPTH", fp)
    wgt_rd = _pick((14, 13, 13, 12, 12, 14, 13), rdepth, "RDEPTH", fp)
    bias_rd = _pick((11, 11, 11, 11, 11, 11, 11), rdepth, "RDEPTH", fp)
    dw = alu_mode in ("ALL", "3D")
    vbs = ["VB{}".format(i) for i in range(img_bg)]
    base = img_bg * pp
    banks = _image_banks(img_bg, pp, icp, 1 << img_rd) + [
        _bank("CONVW", "Param", base, wgt_bank_num, icp, 1 << wgt_rd)]
    base += wgt_bank_num
    if dw:
        banks.append(_bank("DWCONVW", "Param", base, 1, icp, 1 << wgt_rd))
        base += 1
    banks.append(_bank("BIAS", "Param", base, 1, wgt_bank_num, 1 << bias_rd))
    if dw:
        banks.append(_bank("DWCVBIAS", "Param", base + 1, 1, icp, 1 << bias_rd))
    isa = (fp >> 48) & 0xFF
    target = _head(fp, "DPUCVDX8G", "DPUCVDX8G_ISA{}_C{}B{}_{:016X}".format(isa, ocp, batch, fp))
    target.update(bank_group=banks, load_engine={"channel_parallel": icp, "output_bank": vbs},
                  save_engine={"channel_parallel": icp, "input_bank": vbs, "argmax": sv_am == 1})
    target["conv_engine"] = {
        "input_channel_parallel": icp, "output_channel_parallel": ocp, "pixel_parallel": pp, "input_bank": vbs,
        "weight_bank": "CONVW", "bias_bank": "BIAS",
        "channel_augmentation": {"channel_num": icp * 2} if ld_augm else {},
        "nonlinear": {"nonlinear_type": ["relu"] + ["leaky_relu", "hsigmoid", "hswish"] * cv_lkrl
                      + ["relu_six"] * cv_rl6},
        "output_bank": vbs,
        "conv_limit": {"kernel_size": "1-16", "stride": "1-8", "stride_out_h": "1-8" if isa3 else ""}}
    target["eltwise_engine"] = {
        "channel_parallel": icp, "pixel_parallel": el_pp, "input_bank": vbs, "output_bank": vbs,
        "nonlinear": {"nonlinear_type": ["relu"]}, "elew_type": ["add"] + ["mult"] * el_mult}
    target["batch"] = batch
    target["alu_engine"] = {
        "channel_parallel": icp, "pixel_parallel": alu_pp, "input_bank": vbs, "output_bank": vbs,
        "weight_bank": "DWCONVW" if dw else "", "bias_bank": "DWCVBIAS" if dw else "",
        "alu_type": (DW_ALU_TYPES if dw else []) + (["w16b0"] if alu_mode == "3D" else []),
        "nonlinear": {"nonlinear_type": ["relu"] + ["leaky_relu"] * dw_lkrl + ["relu_six"] * dw},
        "alu_limit": {"kernel_size": "1-256", "stride": {"ALL": "1-8", "3D": "1-256"}.get(alu_mode, ""),
                      "stride_out_h": _stride_out_h(pp, alu_wp) if isa3 else ""},
        "pad_limit": dict(PAD_LIMIT)}
    return target


def _dpucv2dx8g(fp: int) -> Dict[str, Any]:  # create_target_DPUCV2DX8G_ISA0.cpp and _ISA1.cpp (the same code)
    cv_arch = fp & 0xF
    pp = _pick((1, 1, 1, 2, 4), cv_arch, "ARCH", fp)
    icp, ocp = _pick((16, 16, 32, 32, 32), cv_arch, "ARCH", fp), _pick((16, 32, 32, 32, 32), cv_arch, "ARCH", fp)
    alu_core_n = _bit(fp, 0xF0)
    batch, ld_augm, sv_am = _bit(fp, 0xFF00), _bit(fp, 0x4000000), _bit(fp, 0x40000000)
    vbs = ["VB0"]  # one image bank group of one bank
    nonlinear = {"nonlinear_type": ["relu", "leaky_relu", "hsigmoid", "hswish", "relu_six"]}
    name = "DPUCV2DX8G_ISA{}_C{}B{}_{:016X}".format((fp >> 48) & 0xFF, (1 << cv_arch) + alu_core_n, batch, fp)
    target = _head(fp, "DPUCV2DX8G", name)
    target.update(bank_group=[_bank("VB0", "Virtual", 0, 1, icp, 65528), _bank("CONVW", "Param", 1, 4, icp // 2,
                                                                                1 << 15)],
                  load_engine={"channel_parallel": icp, "output_bank": vbs},
                  save_engine={"channel_parallel": icp, "input_bank": vbs, "argmax": sv_am == 1})
    target["conv_engine"] = {
        "input_channel_parallel": icp, "output_channel_parallel": ocp, "pixel_parallel": pp, "input_bank": vbs,
        "weight_bank": "CONVW", "bias_bank": "CONVW",
        "channel_augmentation": {"channel_num": icp * 2} if ld_augm else {},
        "nonlinear": dict(nonlinear), "output_bank": vbs, "conv_limit": {"kernel_size": "1-16", "stride": "1-16"}}
    target["batch"] = batch
    target["alu_engine"] = {
        "channel_parallel": icp, "pixel_parallel": alu_core_n // 2, "input_bank": vbs, "output_bank": vbs,
        "weight_bank": "CONVW", "bias_bank": "CONVW", "alu_type": ["macc_temp", "comp_temp", "elew_add", "elew_mult"],
        "nonlinear": dict(nonlinear), "alu_limit": {"kernel_size": "1-256", "stride": "1-256"},
        "pad_limit": dict(PAD_LIMIT)}
    return target


# target_factory.cpp's create(fingerprint): (type, isa_version) -> the family's create_target_*.
_SYNTHESIZERS: Dict[Tuple[str, int], Callable[[int], Dict[str, Any]]] = {
    ("DPUCZDX8G", 0): _dpuczdx8g_isa0,
    ("DPUCZDX8G", 1): _dpuczdx8g_isa1,
    ("DPUCVDX8G", 2): lambda fp: _dpucvdx8g(fp, isa3=False),
    ("DPUCVDX8G", 3): lambda fp: _dpucvdx8g(fp, isa3=True),
    ("DPUCV2DX8G", 0): _dpucv2dx8g,
    ("DPUCV2DX8G", 1): _dpucv2dx8g,
}
