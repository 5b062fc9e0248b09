"""hostctl prepare on small generated image folders: formats, splits, preprocessing, checkpoints, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import hostctl_inprocess, tree_snapshot
from PIL import Image

import hostctl.cli.prepare  # noqa: F401 - registers the verb, whatever hostctl.cli imports
from container_payload.job import SAMPLES, STATE_DICT
from container_payload.loading import read_state_dict
from container_payload.models.unet import Unet
from hostctl.prepare import IMAGENET_MEAN, IMAGENET_STD, PrepareOptions, prepare
from hostctl.synthetic import palette_image
from hostctl.ui import Reporter

NUM_CLASSES = 3
SIZE = (3, 16, 16)
UNET_ARGS = {"width": 4, "depth": 2}
COLOURS = [(0, 0, 0), (255, 0, 0), (0, 128, 255)]


def class_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Blocks of classes, so that resizing keeps them recognisable."""
    coarse = rng.integers(0, NUM_CLASSES, (max(1, height // 4), max(1, width // 4)), dtype=np.uint8)
    return np.kron(coarse, np.ones((4, 4), np.uint8))[:height, :width]


def make_dataset(root: Path, n: int = 10, width: int = 20, height: int = 24, masks: str = "mixed",
                 seed: int = 0) -> dict[str, np.ndarray]:
    """images/ (every third one JPEG) and masks/ ('mixed' L and P PNGs, or 'rgb' colour PNGs); returns the maps."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    maps = {}
    for i in range(n):
        stem = f"img{i:02d}"
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / (f"{stem}.jpg" if i % 3 == 0 else f"{stem}.png"))
        maps[stem] = class_map(rng, height, width)
        if masks == "rgb":
            Image.fromarray(np.array(COLOURS, np.uint8)[maps[stem]]).save(root / "masks" / f"{stem}.png")
        elif i % 2:
            palette_image(maps[stem]).save(root / "masks" / f"{stem}.png")
        else:
            Image.fromarray(maps[stem], mode="L").save(root / "masks" / f"{stem}.png")
    return maps


def options(dataset: Path, out: Path, **changes) -> PrepareOptions:
    values = dict(dataset=dataset, output_dir=out, input_size=SIZE, num_classes=NUM_CLASSES, calib_samples=5,
                  model_args=UNET_ARGS)
    values.update(changes)
    return PrepareOptions(**values)


def contents(samples: Path) -> dict[str, dict[str, np.ndarray]]:
    with h5py.File(samples, "r") as file:
        return {group: {name: file[group][name][()] for name in file[group]} for group in file}


def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return Unet(num_classes=NUM_CLASSES, **UNET_ARGS)


# -- what it writes -----------------------------------------------------------------------------------------------

def test_png_and_jpeg_images_with_index_and_palette_masks(tmp_path):
    maps = make_dataset(tmp_path / "data")
    result = prepare(options(tmp_path / "data", tmp_path / "out"), Reporter(quiet=True))
    data = contents(tmp_path / "out" / SAMPLES)
    assert set(data) == {"calibration", "test", "labels"}
    assert result.num_test == len(data["test"]) == 2  # 20% of 10, seeded
    assert result.num_calibration == len(data["calibration"]) == 5
    assert list(data["labels"]) == list(data["test"])  # one label per test sample, same names, same order
    assert not set(data["calibration"]) & set(data["test"])
    for sample in (*data["calibration"].values(), *data["test"].values()):
        assert sample.dtype == np.float32 and sample.shape == SIZE
        assert 0.0 <= sample.min() and sample.max() <= 1.0  # "unit" scaling by default
    for name, label in data["labels"].items():
        assert label.dtype == np.uint8 and label.shape == SIZE[1:]
        # Nearest resizing picks class values that exist in the original map.
        assert set(np.unique(label)) <= set(np.unique(maps[name]))
    assert result.state_dict_file is None and not (tmp_path / "out" / STATE_DICT).exists()
    assert sum(result.class_pixels) == 2 * 16 * 16


def test_split_is_seeded(tmp_path):
    make_dataset(tmp_path / "data", n=20)
    names = []
    for seed in (0, 0, 1):
        out = tmp_path / f"out{len(names)}"
        prepare(options(tmp_path / "data", out, seed=seed), Reporter(quiet=True))
        data = contents(out / SAMPLES)
        names.append((list(data["calibration"]), list(data["test"])))
    assert names[0] == names[1] and names[0] != names[2]


def test_split_files_are_honoured(tmp_path):
    make_dataset(tmp_path / "data")
    (tmp_path / "data" / "splits").mkdir()
    (tmp_path / "data" / "splits" / "train.txt").write_text("img00\nimg01.png\n\n# a comment\nimg02\n")
    (tmp_path / "data" / "splits" / "test.txt").write_text("img07\nimg08\nimg09\n")
    result = prepare(options(tmp_path / "data", tmp_path / "out", calib_samples=200, test_samples=2),
                     Reporter(quiet=True))
    data = contents(tmp_path / "out" / SAMPLES)
    assert list(data["calibration"]) == ["img00", "img01", "img02"]  # all 3: fewer than asked for
    assert set(data["test"]) < {"img07", "img08", "img09"} and len(data["test"]) == 2
    assert result.split == "splits/ files"


@pytest.mark.parametrize("normalize, mean, std, expect", [
    (None, None, None, lambda p: p / 255),
    ("none", None, None, lambda p: p),
    ("imagenet", None, None,
     lambda p: (p / 255 - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]),
    (None, (0.5,), (0.25,), lambda p: (p / 255 - 0.5) / 0.25),
    ("none", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5), lambda p: (p - 127.5) / 127.5),
])
def test_preprocessing_matches_its_formula(tmp_path, normalize, mean, std, expect):
    make_dataset(tmp_path / "data", width=16, height=16)  # the input size: no resizing
    prepare(options(tmp_path / "data", tmp_path / "out", normalize=normalize, mean=mean, std=std),
            Reporter(quiet=True))
    name, sample = next(iter(contents(tmp_path / "out" / SAMPLES)["test"].items()))
    path = next((tmp_path / "data" / "images").glob(f"{name}.*"))
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).transpose(2, 0, 1)
    np.testing.assert_allclose(sample, expect(pixels), rtol=1e-5, atol=1e-5)


def test_greyscale_input(tmp_path):
    make_dataset(tmp_path / "data")
    prepare(options(tmp_path / "data", tmp_path / "out", input_size=(1, 8, 12), model_args={}),
            Reporter(quiet=True))
    sample = next(iter(contents(tmp_path / "out" / SAMPLES)["calibration"].values()))
    assert sample.shape == (1, 8, 12)


@pytest.mark.parametrize("palette", [[list(c) for c in COLOURS], ["#000000", "#ff0000", "#0080ff"]])
def test_colour_masks_with_a_palette(tmp_path, palette):
    maps = make_dataset(tmp_path / "data", masks="rgb", width=16, height=16)
    (tmp_path / "palette.json").write_text(json.dumps(palette))
    prepare(options(tmp_path / "data", tmp_path / "out", palette=tmp_path / "palette.json"), Reporter(quiet=True))
    for name, label in contents(tmp_path / "out" / SAMPLES)["labels"].items():
        np.testing.assert_array_equal(label, maps[name])


def test_new_files_replace_old_ones_and_others_stay(tmp_path):
    make_dataset(tmp_path / "data")
    out = tmp_path / "out"
    prepare(options(tmp_path / "data", out, calib_samples=2), Reporter(quiet=True))
    (out / "notes.txt").write_text("mine")
    prepare(options(tmp_path / "data", out, calib_samples=4), Reporter(quiet=True))
    assert (out / "notes.txt").read_text() == "mine"
    with h5py.File(out / SAMPLES) as h5:
        assert len(h5["calibration"]) == 4
    assert json.loads((out / "prepare.json").read_text())["written"] == ["prepare.json", SAMPLES]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]  # no staging directory left


def test_files_prepare_did_not_write_are_never_replaced(tmp_path, capsys):
    make_dataset(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / SAMPLES).write_bytes(b"the notebook's samples")
    args = ["prepare", "--dataset", str(tmp_path / "data"), "--output-dir", str(out), "--input-size", *map(str, SIZE),
            "--num-classes", str(NUM_CLASSES), *[f"--model-arg={k}={v}" for k, v in UNET_ARGS.items()]]
    code, _, err = hostctl_inprocess(args, capsys)
    assert code == 2 and f"{SAMPLES}: exists and was not written by hostctl" in err
    assert (out / SAMPLES).read_bytes() == b"the notebook's samples"
    code, _, err = hostctl_inprocess([*args[:3], "--output-dir", str(tmp_path / "data" / "inputs"), *args[5:]], capsys)
    assert code == 2 and "output directory overlaps the input" in err


# -- checkpoints --------------------------------------------------------------------------------------------------

def _state(model):
    return model.state_dict()


CHECKPOINT_FORMS = {
    "plain state_dict": lambda m: _state(m),
    "checkpoint['state_dict']": lambda m: {"state_dict": _state(m), "epoch": 3, "best_miou": 0.9},
    "checkpoint['model']": lambda m: {"model": _state(m), "optimizer": {"lr": 0.1}},
    "checkpoint['model_state_dict']": lambda m: {"model_state_dict": _state(m)},
    "module. prefix (DataParallel)": lambda m: {f"module.{k}": v for k, v in _state(m).items()},
    "model. prefix (Lightning)": lambda m: {"state_dict": {f"model.{k}": v for k, v in _state(m).items()},
                                            "hyper_parameters": {"lr": 0.01}},
    "model. prefix plus a loss buffer": lambda m: {
        "state_dict": {**{f"model.{k}": v for k, v in _state(m).items()}, "loss.weight": torch.ones(3)}},
    "module.model. prefixes": lambda m: {f"module.model.{k}": v for k, v in _state(m).items()},
    "pickled module": lambda m: m,
    "checkpoint['model'] as a module": lambda m: {"model": m, "epoch": 1},
}


@pytest.mark.parametrize("form", list(CHECKPOINT_FORMS))
def test_checkpoint_forms(tmp_path, form):
    make_dataset(tmp_path / "data", n=4)
    model = tiny_unet()
    torch.save(CHECKPOINT_FORMS[form](model), tmp_path / "ckpt.pt")
    result = prepare(options(tmp_path / "data", tmp_path / "out", checkpoint=tmp_path / "ckpt.pt"),
                     Reporter(quiet=True))
    saved = read_state_dict(str(tmp_path / "out" / STATE_DICT))
    expected = model.state_dict()
    assert list(saved) == list(expected)
    for key, tensor in expected.items():
        assert torch.equal(saved[key], tensor), key
    assert result.state_dict_file == tmp_path / "out" / STATE_DICT
    assert ("stripped" in result.checkpoint_form) == ("prefix" in form)


@pytest.mark.parametrize("key", [7, ("conv", 1)], ids=["int key", "tuple key"])
def test_checkpoint_with_a_key_that_is_not_a_name_is_refused(tmp_path, capsys, key):
    """Issue 24, case 5, through prepare: torch.load(weights_only=True) accepts int and tuple keys."""
    make_dataset(tmp_path / "data", n=4)
    torch.save({**tiny_unet().state_dict(), key: torch.zeros(1)}, tmp_path / "ckpt.pt")
    code, out, err = hostctl_inprocess(
        ["prepare", "--dataset", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"), "--input-size",
         *map(str, SIZE), "--num-classes", "3", "--checkpoint", str(tmp_path / "ckpt.pt"), "--model-arg=width=4",
         "--model-arg=depth=2", "--json"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and "ckpt.pt" in errors[0] and f"has key {key!r}" in errors[0], err
    assert "Traceback" not in err and json.loads(out)["exit_code"] == 2
    assert not (tmp_path / "out").exists()


# -- bad inputs: exit 2, one line naming the file and the problem, the output directory untouched ----------------

def _break(kind: str, data: Path, tmp_path: Path) -> list[str]:
    """Break the dataset or the options one way; returns extra CLI arguments."""
    if kind == "image without mask":
        (data / "masks" / "img04.png").unlink()
    elif kind == "mask without image":
        (data / "images" / "img04.png").unlink()
    elif kind == "mask value too large":
        Image.fromarray(np.full((24, 20), 5, np.uint8), mode="L").save(data / "masks" / "img04.png")
    elif kind == "unreadable image":
        (data / "images" / "img04.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif kind == "size mismatch":
        Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(data / "masks" / "img04.png")
    elif kind == "colour mask without palette":
        Image.fromarray(np.array(COLOURS, np.uint8)[np.zeros((24, 20), int) + 1]).save(data / "masks" / "img04.png")
    elif kind == "colour not in palette":
        shutil.rmtree(data)
        make_dataset(data, n=6, masks="rgb")
        (tmp_path / "palette.json").write_text(json.dumps(COLOURS))
        Image.fromarray(np.full((24, 20, 3), 7, np.uint8)).save(data / "masks" / "img04.png")
        return ["--palette", str(tmp_path / "palette.json")]
    elif kind == "malformed palette":
        (tmp_path / "palette.json").write_text("[[0, 0]]")
        return ["--palette", str(tmp_path / "palette.json")]
    elif kind == "JPEG mask":
        (data / "masks" / "img04.png").rename(data / "masks" / "img04.jpg")
    elif kind == "unknown name in split":
        (data / "splits").mkdir()
        (data / "splits" / "test.txt").write_text("img01\nnope\n")
    elif kind == "checkpoint of another model":
        torch.save(Unet(num_classes=5, **UNET_ARGS).state_dict(), tmp_path / "ckpt.pt")
        return ["--checkpoint", str(tmp_path / "ckpt.pt")]
    elif kind == "checkpoint not a torch file":
        (tmp_path / "ckpt.pt").write_text("hello")
        return ["--checkpoint", str(tmp_path / "ckpt.pt")]
    elif kind == "checkpoint without weights":
        torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "ckpt.pt")
        return ["--checkpoint", str(tmp_path / "ckpt.pt")]
    elif kind == "checkpoint with NaN weights":
        state = tiny_unet().state_dict()
        next(v for v in state.values() if v.is_floating_point()).view(-1)[:3] = float("nan")
        torch.save({"state_dict": state, "epoch": 9}, tmp_path / "ckpt.pt")
        return ["--checkpoint", str(tmp_path / "ckpt.pt")]
    elif kind == "missing dataset":
        return ["--dataset", str(tmp_path / "nowhere")]
    elif kind == "input size the model cannot take":
        torch.save(tiny_unet().state_dict(), tmp_path / "ckpt.pt")
        return ["--checkpoint", str(tmp_path / "ckpt.pt"), "--input-size", "3", "10", "10"]
    elif kind == "bad --normalize":
        return ["--normalize", "zscore"]
    elif kind == "--mean without --std":
        return ["--mean", "0.5"]
    elif kind == "--mean of the wrong length":
        return ["--mean", "0.5,0.5", "--std", "1,1"]
    elif kind == "four channels":
        return ["--input-size", "4", "16", "16"]
    return []


BAD_INPUTS = {
    "image without mask": "masks: has no mask for 1 image(s): img04",
    "mask without image": "images: has no image for 1 mask(s): img04",
    "mask value too large": "img04.png: holds class value 5, but --num-classes is 3",
    "unreadable image": "img04.png: cannot be read as an image",
    "size mismatch": "img04.png: is 10x10 but its image img04.png is 20x24",
    "colour mask without palette": "img04.png: is a colour mask",
    "colour not in palette": "img04.png: has colour (7, 7, 7) at x=0, y=0, which the palette does not list",
    "malformed palette": "palette.json: colour 0 ([0, 0])",
    "JPEG mask": "masks: holds JPEG masks (img04.jpg)",
    "unknown name in split": "test.txt: line 2 names 'nope'",
    "checkpoint of another model": "ckpt.pt: does not fit the model",
    "checkpoint not a torch file": "ckpt.pt: cannot be read by torch.load",
    "checkpoint without weights": "ckpt.pt: holds a dictionary without a state_dict (keys: 'epoch', 'lr')",
    "checkpoint with NaN weights": "ckpt.pt: weight 'inc.block.0.weight' holds 3 NaN or Inf values",
    "missing dataset": "nowhere: is not a directory",
    "input size the model cannot take": "fails on a 1x3x10x10 input",
    "bad --normalize": "--normalize 'zscore' is not one of imagenet, unit, none",
    "--mean without --std": "--mean and --std go together",
    "--mean of the wrong length": "--mean has 2 values for 3 channels",
    "four channels": "--input-size has 4 channels",
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_leaves_the_output_alone(tmp_path, capsys, kind):
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, n=6)
    out.mkdir()
    (out / SAMPLES).write_bytes(b"previous samples")
    (out / STATE_DICT).write_bytes(b"previous weights")
    (out / "prepare.json").write_text(json.dumps({"written": ["prepare.json", SAMPLES, STATE_DICT]}))
    before = tree_snapshot(out)
    args = ["prepare", "--dataset", str(data), "--output-dir", str(out), "--input-size", *map(str, SIZE),
            "--num-classes", str(NUM_CLASSES), "--calib-samples", "200",  # all of them: every file is read
            *[f"--model-arg={k}={v}" for k, v in UNET_ARGS.items()]]
    code, _, err = hostctl_inprocess(args + _break(kind, data, tmp_path), capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and BAD_INPUTS[kind] in errors[0], err
    assert tree_snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left


def test_cli_success_prints_json(tmp_path, capsys):
    make_dataset(tmp_path / "data", n=5)
    torch.save({"state_dict": tiny_unet().state_dict()}, tmp_path / "ckpt.pt")
    code, out, err = hostctl_inprocess(
        ["prepare", "--dataset", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"), "--input-size",
         *map(str, SIZE), "--num-classes", "3", "--checkpoint", str(tmp_path / "ckpt.pt"), "--model-arg=width=4",
         "--model-arg=depth=2", "--normalize", "imagenet", "--calib-samples", "2", "--seed", "7", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["num_calibration"] == 2 and summary["num_test"] == 1
    assert summary["checkpoint_form"] == "checkpoint['state_dict']"
    assert summary["preprocessing"]["mean"] == list(IMAGENET_MEAN)
    assert "deployment inputs in" in err
