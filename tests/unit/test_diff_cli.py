"""hostctl diff: two quant_info.json files, tensor by tensor."""

from __future__ import annotations

import json

from helpers import hostctl_inprocess


def write(path, param, output, version="1"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"param": param, "output": output, "input": {}, "fast_finetuned": False,
                                "bias_corrected": True, "version": version, "graph_md5": "x"}))
    return path


def test_identical_files(tmp_path, capsys):
    a = write(tmp_path / "a" / "quant_info.json", {"M::conv.weight": [[8, 7]]}, {"M::nndct_input_0": [[8, 5]]})
    b = write(tmp_path / "b.json", {"M::conv.weight": [[8, 7]]}, {"M::nndct_input_0": [[8, 5]]}, version="2")
    code, out, err = hostctl_inprocess(["diff", str(a.parent), str(b), "--exit-code", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["identical"] is True
    assert "same tensors, same fix positions" in err and "version: '1' vs '2'" in err


def test_differences_are_listed_and_exit_code_is_opt_in(tmp_path, capsys):
    a = write(tmp_path / "a.json", {"M::conv.weight": [[8, 7]], "M::conv.bias": [[8, 9]]},
              {"M::nndct_relu_2": [[8, 4]]})
    b = write(tmp_path / "b.json", {"M::conv.weight": [[8, 6]]}, {"M::nndct_relu_2": [[8, 4]]})
    code, out, err = hostctl_inprocess(["diff", str(a), str(b), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["sections"]["param"]["differ"] == [{"name": "M::conv.weight", "a": [8, 7], "b": [8, 6]}]
    assert data["sections"]["param"]["only_a"] == ["M::conv.bias"]
    assert data["sections"]["output"]["match_ratio"] == 1.0
    assert "M::conv.weight" in err
    code, _, _ = hostctl_inprocess(["diff", str(a), str(b), "--exit-code"], capsys)
    assert code == 1


def test_a_file_that_is_not_quant_info(tmp_path, capsys):
    a = write(tmp_path / "a.json", {}, {})
    bad = tmp_path / "b.json"
    bad.write_text("[1, 2]")
    code, _, err = hostctl_inprocess(["diff", str(a), str(bad)], capsys)
    assert code == 2
    assert "b.json" in err and "is not a quant_info.json document" in err
