"""The DPU targets as data (container_payload/inspector/targets.py, targets.json): every target_factory target
loads, fingerprints and synthesis agree with target_factory, lookups round-trip, errors name what exists, and the
JSON is what scripts/make_targets.py makes from the Vitis-AI sources (when a mirror of them is here)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT

from container_payload import job
from container_payload.inspector import targets
from container_payload.inspector.targets import BOARDS, by_fingerprint, by_name, from_arch_json, in_range, parse_range

MIRROR = os.environ.get("HOSTCTL_VITIS_AI_MIRROR", "/work/.mirror/Xilinx+Vitis-AI/repo")
TARGETS_DIR = "src/vai_runtime/target_factory/targets/"
KV260 = 0x101000016010407  # the boards' DPU: examples/waa/apps/*/pre_built_flow/DPUCZDX8G_zcu102/config_file/arch.json

# target_factory's own name => fingerprint listing (its to_string), as quoted in an nndct error message:
# src/vai_optimizer/nndct_shared/inspector/device_allocator.py line 20 (Vitis-AI b7953a2a, the 3.5 release).
FACTORY_LISTING = {
    "AMD_AIE2_1x4_Overlay": 0x800020500fffffe, "AMD_AIE2_4x5_Overlay": 0x80000000020c23f,
    "DPUCADF8H_ISA0": 0x700000000000000, "DPUCAHX8H_ISA2": 0x20200000010002a,
    "DPUCAHX8H_ISA2_DWC": 0x20200000010002b, "DPUCAHX8H_ISA2_ELP2": 0x20200000000002e,
    "DPUCAHX8L_ISA0": 0x30000000000001d, "DPUCAHX8L_ISA0_SP": 0x30000000000101d,
    "DPUCVDX8G_ISA3_C32B1": 0x603000b56011811, "DPUCVDX8G_ISA3_C32B3": 0x603000b56011831,
    "DPUCVDX8G_ISA3_C32B3_PSMNET": 0x603000b16026831, "DPUCVDX8G_ISA3_C32B6": 0x603000b56011861,
    "DPUCVDX8G_ISA3_C64B1": 0x603000b56011812, "DPUCVDX8G_ISA3_C64B3": 0x603000b56011832,
    "DPUCVDX8G_ISA3_C64B5": 0x603000b56011852, "DPUCVDX8H_ISA1_F2W2_8PE": 0x501000000140fee,
    "DPUCVDX8H_ISA1_F2W4_4PE": 0x5010000001e082f, "DPUCVDX8H_ISA1_F2W4_6PE_aieDWC": 0x501000000160c2f,
    "DPUCVDX8H_ISA1_F2W4_6PE_aieMISC": 0x5010000001e082e, "DPUCZDI4G_ISA0_B4096_DEMO_SSD": 0x400002003220206,
    "DPUCZDI4G_ISA0_B8192D8_DEMO_SSD": 0x400002003220207, "DPUCZDX8G_ISA1_B1024": 0x101000056010402,
    "DPUCZDX8G_ISA1_B1152": 0x101000056010203, "DPUCZDX8G_ISA1_B1600": 0x101000056010404,
    "DPUCZDX8G_ISA1_B2304": 0x101000056010405, "DPUCZDX8G_ISA1_B3136": 0x101000056010406,
    "DPUCZDX8G_ISA1_B4096": 0x101000056010407, "DPUCZDX8G_ISA1_B512": 0x101000056010200,
    "DPUCZDX8G_ISA1_B800": 0x101000056010201, "V70_2x3_Overlay": 0x80000000020c242,
}


def data() -> dict:
    return json.loads(Path(targets.DATA).read_text())


def git(*args: str) -> str:
    return subprocess.run(["git", "--git-dir", MIRROR, *args], check=True, capture_output=True, text=True).stdout


needs_mirror = pytest.mark.skipif(not (os.path.isdir(MIRROR) and shutil.which("git")),
                                  reason=f"no Vitis-AI git mirror at {MIRROR} (set HOSTCTL_VITIS_AI_MIRROR)")


def make_targets():
    """scripts/make_targets.py as a module, or a skip saying what it lacks (git, protoc, protobuf)."""
    pytest.importorskip("google.protobuf", reason="scripts/make_targets.py needs protobuf (pip install protobuf)")
    if not shutil.which("protoc"):
        pytest.skip("scripts/make_targets.py needs protoc")
    spec = importlib.util.spec_from_file_location("make_targets", ROOT / "scripts" / "make_targets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def diff(a, b, path=""):
    """Where two targets differ, key order and list order included."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = [] if list(a) == list(b) else [f"{path}: keys {list(a)} != {list(b)}"]
        return found + [d for key in a if key in b for d in diff(a[key], b[key], f"{path}/{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, f"{path}/{i}")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


# --- loading ---------------------------------------------------------------------------------------------------------


def test_every_target_of_the_json_loads_with_its_listed_fingerprint():
    entries = data()["targets"]
    assert len(entries) == len(targets.names()) == 34
    assert targets.names() == sorted(e["target"]["name"] for e in entries)
    for entry in entries:
        target = by_name(entry["target"]["name"])
        assert target.registered and target.fingerprint_hex == entry["fingerprint"]
        assert entry["prototxt"] == target.name + ".prototxt"
        assert target.to_dict() == entry["target"]
        assert by_fingerprint(target.fingerprint) is target
        groups = [group["name"] for group in target.get("bank_group", default=())]
        assert len(groups) == len(set(groups))  # so nndct's first-match and last-match bank lookups agree


def test_header_records_the_commit_and_the_sources():
    source = targets.source()
    assert len(source["commit"]) == 40 and source["repository"] == "https://github.com/Xilinx/Vitis-AI"
    assert source["schema"].endswith("target_factory/src/target.proto")
    assert data()["ipu_only"] == ["AMD_AIE2_1x4_Overlay", "AMD_AIE2_4x5_Overlay", "AMD_AIE2_5x4_Overlay",
                                  "AMD_AIE2_Nx4_Overlay"]


@needs_mirror
def test_every_prototxt_of_the_mirror_is_a_target():
    files = [path.rsplit("/", 1)[1] for path in git("ls-tree", "--name-only", "HEAD", TARGETS_DIR).split()]
    assert sorted(e["prototxt"] for e in data()["targets"]) == sorted(f for f in files if f.endswith(".prototxt"))


# --- fingerprints ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FACTORY_LISTING))
def test_fingerprints_match_target_factorys_own_listing(name):
    assert by_name(name).fingerprint == FACTORY_LISTING[name]


def test_known_fingerprints_of_the_boards_targets():
    b4096 = by_name("DPUCZDX8G_ISA1_B4096")
    assert (b4096.type, b4096.isa_version, b4096.feature_code) == ("DPUCZDX8G", 1, 0x56010407)
    assert b4096.fingerprint == 1 << 56 | 1 << 48 | 0x56010407 == 0x101000056010407
    # dpu_fingerprint of the xmodels Vitis-AI compiled for VEK280 and V70 (examples/custom_operator/*/compiled/)
    assert by_name("DPUCV2DX8G_ISA1_C20B14").fingerprint_hex == "0x901400044000e44"
    assert targets.fingerprint_of("DPUCVDX8G", 3, 0xb56011861) == by_name("DPUCVDX8G_ISA3_C32B6").fingerprint


def test_kv260s_fingerprint_is_b4096_synthesized_without_the_save_engines_argmax():
    kv260 = by_fingerprint(hex(KV260))
    assert not kv260.registered
    # create_target_DPUCZDX8G_ISA1.cpp's name: "DPUCZDX8G_ISA<isa>_B<peak ops>_<fingerprint, 16 upper-case hex>"
    assert kv260.name == "DPUCZDX8G_ISA1_B4096_0101000016010407"
    assert (kv260.fingerprint, kv260.feature_code) == (KV260, 0x16010407)
    registered = by_name("DPUCZDX8G_ISA1_B4096").to_dict()
    synthesized = kv260.to_dict()
    assert registered["save_engine"].pop("argmax") is True and "argmax" not in synthesized["save_engine"]
    for key in ("name", "feature_code"):
        del registered[key], synthesized[key]
    assert synthesized == registered


@pytest.mark.parametrize("name", [n for n in targets.names() if n.startswith(("DPUCZDX8G_ISA1", "DPUCVDX8G_ISA3",
                                                                                  "DPUCV2DX8G_ISA1"))])
def test_synthesis_rebuilds_every_registered_target_of_its_family(name):
    registered = by_name(name)
    synthesized = targets.synthesize(registered.fingerprint)
    assert synthesized.name.endswith(f"_{registered.fingerprint:016X}")
    assert diff({**synthesized.to_dict(), "name": name}, registered.to_dict()) == []


@needs_mirror
def test_synthesis_rebuilds_target_factorys_expired_targets():
    """The ISA0 DPUCZDX8G (create_target_v2.cpp) and ISA2 DPUCVDX8G definitions target_factory retired to
    expired_targets/: the synthesizers registered targets cannot check."""
    from google.protobuf import text_format

    tool = make_targets()
    message_class = tool.target_class(git("show", "HEAD:" + tool.SCHEMA))
    checked = 0
    for path in git("ls-tree", "--name-only", "HEAD", "src/vai_runtime/target_factory/expired_targets/").split():
        message = message_class()
        text_format.Parse(git("show", "HEAD:" + path), message)
        expired = tool.to_dict(message)
        if (expired["type"], expired.get("isa_version", 0)) not in targets._SYNTHESIZERS:
            continue
        fingerprint = targets.fingerprint_of(expired["type"], expired.get("isa_version", 0), expired["feature_code"])
        synthesized = targets.synthesize(fingerprint).to_dict()
        assert diff({**synthesized, "name": expired["name"]}, expired) == [], path
        checked += 1
    assert checked == 21  # 20 DPUCZDX8G_ISA0_*, DPUCVDX8G_ISA2_C32B3


def test_synthesized_dpucv2dx8g_and_dpucvdx8g_names():
    c20b14 = by_name("DPUCV2DX8G_ISA1_C20B14").fingerprint
    assert targets.synthesize(c20b14 & ~(1 << 48)).name == "DPUCV2DX8G_ISA0_C20B14_0900400044000E44"
    # batch 2 instead of 6 (bits 4-7): not registered
    assert by_fingerprint(0x603000b56011821).name == "DPUCVDX8G_ISA3_C32B2_0603000B56011821"


@pytest.mark.parametrize("fingerprint, message", [
    (0xff00000000000000, "unknown DPU type code 255"),
    (0x0200000000000001, "synthesizes no DPUCAHX8H targets"),
    (0x0600000076080812, "synthesizes DPUCVDX8G targets for ISA 2, 3 only"),
    (0x010100001601040f, "invalid ARCH=0xf"),
    (0x0603000b56017811, "invalid RDEPTH=0x7"),
    ("0x", "not a hex number"),
    ("101000016010407", 'give an int or a "0x..." hex string'),
    (1 << 64, "not a 64-bit value"),
])
def test_fingerprints_target_factory_cannot_create_are_refused(fingerprint, message):
    with pytest.raises(ValueError, match=message):
        by_fingerprint(fingerprint)


# --- lookup ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", targets.names())
def test_name_fingerprint_and_arch_json_round_trip(name, tmp_path):
    target = by_name(name)
    assert by_fingerprint(target.fingerprint) == by_fingerprint(target.fingerprint_hex) == target
    by_fp, by_target = tmp_path / "fp.json", tmp_path / "target.json"
    by_fp.write_text(json.dumps({"fingerprint": target.fingerprint_hex}))
    by_target.write_text(json.dumps({"target": name}))
    assert from_arch_json(str(by_fp)) is from_arch_json(str(by_target)) is target
    assert targets.resolve(name) is targets.resolve(target.fingerprint_hex) is targets.resolve(str(by_fp)) is target


def test_a_synthesized_target_round_trips_too(tmp_path):
    kv260 = by_fingerprint(KV260)
    assert by_name(kv260.name) == kv260 and hash(by_name(kv260.name)) == hash(kv260)
    arch = tmp_path / "arch.json"
    arch.write_text('{"fingerprint":"0x101000016010407"}')  # the boards' arch.json, byte for byte
    assert from_arch_json(str(arch)) == kv260


@needs_mirror
def test_the_arch_json_vitis_ai_ships_for_zcu102(tmp_path):
    path = "examples/waa/apps/resnet50/pre_built_flow/DPUCZDX8G_zcu102/config_file/arch.json"
    arch = tmp_path / "arch.json"
    arch.write_text(git("show", "HEAD:" + path))
    assert from_arch_json(str(arch)).name == "DPUCZDX8G_ISA1_B4096_0101000016010407"


def test_arch_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "arch.json"
    for text, message in (("{", "not JSON"), ('{"dpu": 1}', 'holds {"fingerprint"'),
                          ('{"target": "DPUCZDX8G_ISA1_B4069"}', "close matches: DPUCZDX8G_ISA1_B4096"),
                          ('{"target": "DPUCZDX8G_ISA1_B512", "fingerprint": "0x101000056010407"}',
                           "is DPUCZDX8G_ISA1_B4096, but target is DPUCZDX8G_ISA1_B512")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message) as raised:
            from_arch_json(str(bad))
        assert str(raised.value).startswith(str(bad))


@pytest.mark.parametrize("name, expected", [
    ("DPUCZDX8G_ISA1_B4069", "close matches: DPUCZDX8G_ISA1_B4096"),
    ("dpuczdx8g_isa1_b4096", "close matches: DPUCZDX8G_ISA1_B4096"),
    ("C20B14", "close matches: DPUCV2DX8G_ISA1_C20B14"),
    ("kv260", "kv260 is a board, its target is DPUCZDX8G_ISA1_B4096"),
    ("101000016010407", 'a fingerprint is written "0x101000016010407"'),
    ("nonsense", "known targets: AMD_AIE2_1x4_Overlay, "),
    ("DPUCZDX8G_ISA1_B4096_0101000016010408", "close matches: DPUCZDX8G_ISA1_B4096"),  # not its own name
])
def test_unknown_names_are_refused_with_close_matches(name, expected):
    with pytest.raises(ValueError, match=f"unknown DPU target '{name}'") as raised:
        by_name(name)
    assert expected in str(raised.value)


def test_boards_name_registered_targets_of_the_projects_boards():
    assert set(BOARDS) == set(job.BOARDS)
    for board, name in BOARDS.items():
        target = targets.resolve(board)
        assert target.name == name and target.registered
        assert job.BOARDS[board].split("/")[0] == target.type  # the arch directory's family is the target's type


# --- what the filters read -------------------------------------------------------------------------------------------


def test_ranges_parse_as_nndct_does():
    assert parse_range("1-16") == list(range(1, 17))
    assert parse_range("0-15") == list(range(16))
    assert parse_range("1-4,8") == [1, 2, 3, 4, 8]
    assert parse_range(" 2 - 3 , 5") == [2, 3, 5]
    assert in_range("1-16", 16) and not in_range("1-16", 17) and not in_range("1-16", 0)
    with pytest.raises(ValueError, match="bad range"):
        parse_range("1-x")


def test_accessors_give_the_filters_fields():
    b4096 = by_name("DPUCZDX8G_ISA1_B4096")
    assert b4096.get("conv_engine", "conv_limit", "kernel_size") == "1-16"
    assert b4096.get("conv_engine", "input_channel_parallel") == 16
    assert b4096.get("pool_engine", "max_limit", "kernel_size") is None
    assert b4096.get("alu_engine", "pad_limit", "pad_left") == "0-15"
    assert b4096.has("alu_engine") and b4096.has("eltwise_engine") and not b4096.has("pool_engine")
    assert b4096.bank_group("CONVW")["bank_depth"] == 2048
    assert b4096.bank_group("VB0").get("base_id", 0) == 0  # proto3: a zero is absent
    assert [g["name"] for g in b4096.banks("conv_engine", "input_bank")] == ["VB0", "VB1"]
    assert [g["name"] for g in b4096.banks("alu_engine", "weight_bank")] == ["DWCONVW"]
    assert b4096.banks("dwconv_engine", "weight_bank") == []
    assert "max_pool" in b4096.get("alu_engine", "alu_type")


def test_the_data_explains_what_the_inspector_was_seen_to_do():
    """DESIGN.md section 11's observations of vai_q_pytorch's inspector follow from these targets' fields."""
    ahx8h = by_name("DPUCAHX8H_ISA2")
    assert not ahx8h.has("dwconv_engine") and not ahx8h.has("alu_engine")  # depthwise goes to the CPU
    assert ahx8h.get("eltwise_engine", "elew_type") == ("add",)  # no eltwise mul
    c20b14 = by_name("DPUCV2DX8G_ISA1_C20B14")
    assert not c20b14.has("pool_engine") and "max_pool" not in c20b14.get("alu_engine", "alu_type")  # no max pool
    # B512 and a 1024x5x5x1024 conv: check_conv_weights_bank_depth's depth against "less equal than 2048"
    b512 = by_name("DPUCZDX8G_ISA1_B512")
    weights = b512.banks("conv_engine", "weight_bank")[0]
    ocp = b512.get("conv_engine", "output_channel_parallel")
    depth = 5 * 5 * -(-1024 // weights["bank_width"]) * -(-ocp // weights["bank_num"])
    assert (depth, weights["bank_depth"]) == (3200, 2048)


def test_targets_are_read_only():
    target = by_name("DPUCZDX8G_ISA1_B4096")
    with pytest.raises(TypeError):
        target.proto["conv_engine"]["pixel_parallel"] = 1
    with pytest.raises(AttributeError):
        target.get("bank_group").append({})
    assert by_name("DPUCZDX8G_ISA1_B4096").get("conv_engine", "pixel_parallel") == 8


# --- the generator ---------------------------------------------------------------------------------------------------


@needs_mirror
def test_the_json_is_what_make_targets_makes_from_the_mirror():
    tool = make_targets()
    expected = tool.render(tool.build(MIRROR)) + "\n"
    assert Path(targets.DATA).read_text() == expected, "out of date: run scripts/make_targets.py"
