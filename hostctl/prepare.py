"""Deployment inputs from a dataset folder and a training checkpoint (DESIGN.md section 4).

    dataset/images/NAME.{png,jpg,jpeg}   dataset/masks/NAME.png   [dataset/splits/{train,test}.txt]
        -> OUTPUT/quantization_samples.h5 (calibration, test, labels) and OUTPUT/state_dict.pt

Everything that can be checked without reading pixels (pairing, splits, palette, checkpoint) is checked before
anything is written. Samples are then streamed into a temporary directory beside the output directory, one image
at a time, and the finished files are moved into place at the end, so a bad image found half-way leaves the
output directory as it was.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import shlex
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from PIL import Image

from container_payload.job import BUILTIN_MODEL, SAMPLES, STATE_DICT
from container_payload.loading import ModelError, _on_path, build_model, check_finite, load_weights
from hostctl.errors import InputError, UsageError
from hostctl.options import DEFAULT_INPUT_DIR
from hostctl.staging import check_free_space, check_replaceable, owned_paths
from hostctl.ui import stdout_to_stderr

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "unit", "none")
# Without splits/test.txt this share of the dataset becomes the test set.
DEFAULT_TEST_SHARE = 0.2
# Keys under which training scripts commonly store the weights inside a checkpoint dictionary.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
# Prefixes that wrappers add to every key: DataParallel/DDP, Lightning modules, torch.compile.
KEY_PREFIXES = ("module.", "model.", "_orig_mod.", "net.")


@dataclass(frozen=True)
class PrepareOptions:
    dataset: Path
    output_dir: Path = DEFAULT_INPUT_DIR
    input_size: tuple[int, int, int] = (3, 512, 512)
    num_classes: int = 7
    normalize: str | None = None  # None: "unit", scaled by --mean/--std when they are given
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    palette: Path | None = None
    calib_samples: int = 200
    test_samples: int | None = None  # None: all of splits/test.txt, or DEFAULT_TEST_SHARE of the dataset
    seed: int = 0
    checkpoint: Path | None = None
    model: str = BUILTIN_MODEL
    model_path: Path | None = None
    model_args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preprocessing:
    """sample = (pixel * scale - mean) / std, per channel, on pixels in 0..255."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """[H,W,C] uint8 -> [C,H,W] float32."""
        chw = pixels.astype(np.float32).transpose(2, 0, 1) * np.float32(self.scale)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray((chw - mean) / std, dtype=np.float32)


@dataclass(frozen=True)
class PrepareResult:
    output_dir: Path
    samples_file: Path
    state_dict_file: Path | None
    num_calibration: int
    num_test: int
    split: str
    preprocessing: Preprocessing
    checkpoint_form: str | None
    class_pixels: tuple[int, ...]  # per class, over the test labels
    seconds: float
    model: dict[str, Any] | None = None  # what state_dict.pt belongs to (model_record); None without --checkpoint
    quantize_command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "samples_file": str(self.samples_file),
            "state_dict_file": str(self.state_dict_file) if self.state_dict_file else None,
            "num_calibration": self.num_calibration,
            "num_test": self.num_test,
            "split": self.split,
            "preprocessing": {"scale": self.preprocessing.scale, "mean": list(self.preprocessing.mean),
                              "std": list(self.preprocessing.std)},
            "checkpoint_form": self.checkpoint_form,
            "class_pixels": list(self.class_pixels),
            "seconds": round(self.seconds, 3),
            "model": self.model,
            "quantize_command": self.quantize_command,
        }


@dataclass(frozen=True)
class _Pair:
    stem: str
    image: Path
    mask: Path


def prepare(options: PrepareOptions, reporter) -> PrepareResult:  # noqa: ANN001 - hostctl.ui.Reporter
    started = time.perf_counter()
    channels = options.input_size[0]
    if channels not in (1, 3):
        raise UsageError(f"--input-size has {channels} channels; prepare reads greyscale (1) or RGB (3) images",
                         "Pass --input-size 3 H W or 1 H W.")
    if options.calib_samples < 1 or (options.test_samples is not None and options.test_samples < 1):
        raise UsageError("--calib-samples and --test-samples must be at least 1")
    if options.output_dir.exists() and not options.output_dir.is_dir():
        raise InputError(options.output_dir, "exists and is not a directory", "Choose another --output-dir.")
    _check_output(options)
    preprocessing = preprocessing_for(options.normalize, options.mean, options.std, channels)
    pairs = scan_dataset(options.dataset, reporter)
    calib, test, split = choose_samples(pairs, options, reporter)
    palette = read_palette(options.palette, options.num_classes) if options.palette else None
    state, form = (load_checkpoint(options.checkpoint, options, reporter) if options.checkpoint else (None, None))
    if state is None:
        kept = (options.output_dir / STATE_DICT).exists()
        reporter.warn(f"no --checkpoint: only {SAMPLES} is written; " + (
            f"the {STATE_DICT} already there is kept" if kept else f"put the model's {STATE_DICT} beside it"))

    channels, height, width = options.input_size
    needed = (len(calib) + len(test)) * channels * height * width * 4 + len(test) * height * width
    check_free_space(options.output_dir.parent, needed + (options.checkpoint.stat().st_size if state else 0)
                     + 1_000_000)
    options.output_dir.parent.mkdir(parents=True, exist_ok=True)
    with _staging(options.output_dir) as staging:
        if state is not None:
            torch.save(state, staging / STATE_DICT)
        class_pixels = _write_samples(staging / SAMPLES, calib, test, preprocessing, palette, options, reporter)
        model = model_record(options) if state is not None else None
        command = quantize_command(options.output_dir, options.input_size, options.num_classes, model)
        _record(staging, options.output_dir, model, command)
        written = _publish(staging, options.output_dir)

    absent = [str(k) for k, n in enumerate(class_pixels) if n == 0]
    if absent:
        reporter.warn(f"class{'es' if len(absent) > 1 else ''} {', '.join(absent)} never occur in the test labels; "
                      "their IoU will not be measured")
    return PrepareResult(
        output_dir=options.output_dir,
        samples_file=options.output_dir / SAMPLES,
        state_dict_file=options.output_dir / STATE_DICT if STATE_DICT in written else None,
        num_calibration=len(calib),
        num_test=len(test),
        split=split,
        preprocessing=preprocessing,
        checkpoint_form=form,
        class_pixels=class_pixels,
        seconds=time.perf_counter() - started,
        model=model,
        quantize_command=command,
    )


# -- options ----------------------------------------------------------------------------------------------------

def preprocessing_for(normalize: str | None, mean: tuple[float, ...] | None, std: tuple[float, ...] | None,
                      channels: int) -> Preprocessing:
    """--normalize picks the pixel scale (and for imagenet its mean/std); --mean/--std apply on that scale."""
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise UsageError(f"--normalize {normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
    if (mean is None) != (std is None):
        raise UsageError("--mean and --std go together", "Pass both, e.g. --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25.")
    if normalize == "imagenet" and mean is not None:
        raise UsageError("--normalize imagenet already sets mean and std", "Drop --mean/--std, or drop --normalize.")
    scale = 1.0 if normalize == "none" else 1.0 / 255.0
    if normalize == "imagenet":
        if channels != 3:
            raise UsageError("--normalize imagenet needs 3 channels", "Use --input-size 3 H W or --normalize unit.")
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    mean, std = mean or (0.0,), std or (1.0,)
    for name, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, channels):
            raise UsageError(f"{name} has {len(values)} values for {channels} channels", "Give one value or one "
                             "per channel, comma-separated.")
    if any(s <= 0 for s in std):
        raise UsageError("--std values must be positive")
    return Preprocessing(scale=scale, mean=tuple(mean) * (channels // len(mean)),
                         std=tuple(std) * (channels // len(std)))


def read_palette(path: Path, num_classes: int) -> np.ndarray:
    """The palette file's colours as 0xRRGGBB codes; index = class."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"cannot be read as JSON ({exc})", 'Write a JSON list of colours, e.g. '
                         '[[0,0,0],[255,0,0]] or ["#000000","#ff0000"].') from exc
    if not isinstance(data, list) or not data:
        raise InputError(path, "is not a non-empty JSON list of colours",
                         'Write one colour per class, e.g. [[0,0,0],[255,0,0]] or ["#000000","#ff0000"].')
    codes = [_colour_code(item, i, path) for i, item in enumerate(data)]
    if len(set(codes)) != len(codes):
        raise InputError(path, "lists a colour twice", "Each class needs its own colour.")
    if len(codes) > num_classes:
        raise InputError(path, f"has {len(codes)} colours but --num-classes is {num_classes}",
                         "Pass the right --num-classes, or list one colour per class.")
    return np.array(codes, dtype=np.int64)


def _colour_code(item: Any, index: int, path: Path) -> int:
    if isinstance(item, str) and len(item) == 7 and item.startswith("#"):
        with contextlib.suppress(ValueError):
            return int(item[1:], 16)
    if (isinstance(item, list) and len(item) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in item)):
        return (item[0] << 16) | (item[1] << 8) | item[2]
    raise InputError(path, f"colour {index} ({item!r}) is neither [R, G, B] with 0..255 values nor '#rrggbb'",
                     "Fix that entry.")


# -- the dataset folder -----------------------------------------------------------------------------------------

def scan_dataset(dataset: Path, reporter) -> dict[str, _Pair]:  # noqa: ANN001
    """Images and masks paired by file stem; every unpaired or duplicated stem is an error."""
    if not dataset.is_dir():
        raise InputError(dataset, "is not a directory", "Pass --dataset DIR holding images/ and masks/.")
    images = _files(dataset / "images", IMAGE_SUFFIXES, reporter)
    masks = _files(dataset / "masks", MASK_SUFFIXES + (".jpg", ".jpeg"), reporter)
    lossy = sorted(p.name for p in masks.values() if p.suffix.lower() != ".png")
    if lossy:
        raise InputError(dataset / "masks", f"holds JPEG masks ({_some(lossy)})",
                         "JPEG compression changes class values at edges: save masks as PNG.")
    if not images:
        raise InputError(dataset / "images", "holds no PNG or JPEG images", "Put the dataset's images there.")
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        raise InputError(dataset / "masks", f"has no mask for {len(no_mask)} image(s): {_some(no_mask)}",
                         "Add masks/STEM.png for each image, or remove the images.")
    no_image = sorted(set(masks) - set(images))
    if no_image:
        raise InputError(dataset / "images", f"has no image for {len(no_image)} mask(s): {_some(no_image)}",
                         "Add the images, or remove the masks.")
    return {stem: _Pair(stem, images[stem], masks[stem]) for stem in sorted(images)}


def _files(folder: Path, suffixes: tuple[str, ...], reporter) -> dict[str, Path]:  # noqa: ANN001
    if not folder.is_dir():
        raise InputError(folder, "does not exist", "A dataset holds images/ and masks/ with files paired by name.")
    found: dict[str, Path] = {}
    skipped = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in suffixes:
            skipped.append(path.name)
            continue
        if path.stem in found:
            raise InputError(folder, f"holds two files named {path.stem!r} ({found[path.stem].name}, {path.name})",
                             "Keep one file per sample name.")
        found[path.stem] = path
    if skipped:
        reporter.warn(f"{folder}: skipped {len(skipped)} file(s) that are not {'/'.join(suffixes)}: {_some(skipped)}")
    return found


def choose_samples(pairs: dict[str, _Pair], options: PrepareOptions,
                   reporter) -> tuple[list[_Pair], list[_Pair], str]:  # noqa: ANN001
    """(calibration, test, how they were split); each list in name order, drawn with options.seed."""
    rng = random.Random(options.seed)
    splits = options.dataset / "splits"
    train_file, test_file = splits / "train.txt", splits / "test.txt"
    if train_file.is_file() or test_file.is_file():
        train = _read_split(train_file, pairs) if train_file.is_file() else None
        test = _read_split(test_file, pairs) if test_file.is_file() else None
        if train is None:
            in_test = set(test or ())
            train = [s for s in pairs if s not in in_test]
        if test is None:
            in_train = set(train)
            test = [s for s in pairs if s not in in_train]
        overlap = set(train) & set(test)
        if overlap:
            reporter.warn(f"{len(overlap)} sample(s) are in both splits ({_some(sorted(overlap))}); "
                          "the test metrics include calibration images")
        split = "splits/ files"
    else:
        stems = list(pairs)
        rng.shuffle(stems)
        n_test = options.test_samples or max(1, round(len(stems) * DEFAULT_TEST_SHARE))
        if len(stems) - n_test < 1:
            raise InputError(options.dataset, f"has {len(stems)} sample(s): too few to split into calibration "
                             "and test", "Add images, or pass a smaller --test-samples, or write splits/.")
        test, train = stems[:n_test], stems[n_test:]
        split = f"seeded split (seed {options.seed})"
    if not train:
        raise InputError(train_file, "leaves no samples for calibration", "List training samples in it.")
    if not test:
        raise InputError(test_file, "leaves no samples for testing", "List test samples in it.")
    calib = _draw(train, options.calib_samples, rng, "calibration", "--calib-samples", reporter)
    test = _draw(test, options.test_samples or len(test), rng, "test", "--test-samples", reporter)
    return [pairs[s] for s in sorted(calib)], [pairs[s] for s in sorted(test)], split


def _read_split(path: Path, pairs: dict[str, _Pair]) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read ({exc})", "Write one sample name (file stem) per line.") from exc
    stems: list[str] = []
    for number, line in enumerate(lines, 1):
        stem = line.strip()
        if not stem or stem.startswith("#"):
            continue
        stem = Path(stem).stem if Path(stem).suffix.lower() in IMAGE_SUFFIXES else stem
        if stem not in pairs:
            raise InputError(path, f"line {number} names {stem!r}, which has no image and mask",
                             "List file stems of images/ (one per line), or fix the name.")
        if stem not in stems:
            stems.append(stem)
    return stems


def _draw(stems: list[str], count: int, rng: random.Random, what: str, flag: str,
          reporter) -> list[str]:  # noqa: ANN001
    if count >= len(stems):
        if count > len(stems):
            reporter.warn(f"{flag} {count}: only {len(stems)} {what} sample(s) available; using all of them")
        return list(stems)
    return rng.sample(stems, count)


# -- pixels -----------------------------------------------------------------------------------------------------

def _write_samples(path: Path, calib: list[_Pair], test: list[_Pair], preprocessing: Preprocessing,
                   palette: np.ndarray | None, options: PrepareOptions,
                   reporter) -> tuple[int, ...]:  # noqa: ANN001
    """Stream every sample into the HDF5 file; returns per-class pixel counts of the test labels."""
    class_pixels = np.zeros(options.num_classes, dtype=np.int64)
    resized: collections.Counter[tuple[int, int]] = collections.Counter()
    reporter.start_task("prepare", len(calib) + len(test), "Preparing samples", unit="images")
    # track_order keeps the groups in insertion (name) order, which is the order the payload reads.
    with h5py.File(path, "w", track_order=True) as file:
        calibration = file.create_group("calibration", track_order=True)
        test_group = file.create_group("test", track_order=True)
        labels = file.create_group("labels", track_order=True)
        for group, pairs, keep_label in ((calibration, calib, False), (test_group, test, True)):
            for pair in pairs:
                sample, label = load_pair(pair, preprocessing, palette, options, resized)
                group.create_dataset(pair.stem, data=sample)
                if keep_label:
                    labels.create_dataset(pair.stem, data=label)
                    class_pixels += np.bincount(label.ravel(), minlength=options.num_classes)
                reporter.update_task("prepare", advance=1)
    reporter.finish_task("prepare")
    if resized:
        _, height, width = options.input_size
        sizes = ", ".join(f"{w}x{h}" for (w, h), _ in resized.most_common(3)) + (", ..." if len(resized) > 3 else "")
        reporter.info(f"resized {sum(resized.values())} of {len(calib) + len(test)} images from {sizes} to "
                      f"{width}x{height} (--input-size; bilinear for images, nearest for masks)")
    return tuple(int(n) for n in class_pixels)


def load_pair(pair: _Pair, preprocessing: Preprocessing, palette: np.ndarray | None, options: PrepareOptions,
              resized: collections.Counter[tuple[int, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One preprocessed [C,H,W] float32 sample and its [H,W] uint8 class map at the input size; `resized` counts
    the original sizes (width, height) of the images that had to be resized."""
    channels, height, width = options.input_size
    image = _open_image(pair.image)
    mask = _open_image(pair.mask)
    if image.size != mask.size:
        raise InputError(pair.mask, f"is {mask.size[0]}x{mask.size[1]} but its image {pair.image.name} is "
                         f"{image.size[0]}x{image.size[1]}", "A mask must have its image's size.")
    classes = mask_classes(mask, palette, pair.mask, options.num_classes)
    image = image.convert("RGB" if channels == 3 else "L")
    if image.size != (width, height):
        if resized is not None:
            resized[image.size] += 1
        image = image.resize((width, height), Image.BILINEAR)
        classes = np.asarray(Image.fromarray(classes).resize((width, height), Image.NEAREST))
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return preprocessing.apply(pixels), np.ascontiguousarray(classes, dtype=np.uint8)


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()  # decode now, so a truncated file fails here with its name
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(path, f"cannot be read as an image ({exc})", "Replace the file or remove it (and its "
                         "pair).") from exc
    return image


def mask_classes(mask: Image.Image, palette: np.ndarray | None, path: Path, num_classes: int) -> np.ndarray:
    """A mask image -> [H,W] uint8 class indices, checked against num_classes."""
    if palette is not None:
        rgb = np.asarray(mask.convert("RGB")).astype(np.int64)
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        order = np.argsort(palette)
        sorted_codes = palette[order]
        position = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
        known = sorted_codes[position] == codes
        if not known.all():
            y, x = (int(v[0]) for v in np.nonzero(~known))
            raise InputError(path, f"has colour {tuple(int(c) for c in rgb[y, x])} at x={x}, y={y}, which the "
                             "palette does not list", "Add the colour to the --palette file or fix the mask.")
        return order[position].astype(np.uint8)
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask)[..., :3]
        if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
            raise InputError(path, "is a colour mask", "Pass --palette FILE, a JSON list of the class colours.")
        values = rgb[..., 0]
    elif mask.mode == "LA":
        values = np.asarray(mask)[..., 0]
    else:  # "P" keeps palette indices, "L"/"I"/"I;16"/"1" are class values already
        values = np.asarray(mask)
    values = values.astype(np.int64)
    if values.size and values.max() >= num_classes:
        raise InputError(path, f"holds class value {int(values.max())}, but --num-classes is {num_classes}",
                         "Pass the right --num-classes, or --palette for colour masks.")
    if values.size and values.min() < 0:
        raise InputError(path, f"holds negative value {int(values.min())}", "Mask values are class indices.")
    return values.astype(np.uint8)


# -- the checkpoint ---------------------------------------------------------------------------------------------

def load_checkpoint(path: Path, options: PrepareOptions,
                    reporter) -> tuple[dict[str, torch.Tensor], str]:  # noqa: ANN001
    """The checkpoint's weights as the model's state_dict, after proving they load and the model runs."""
    if not path.is_file():
        raise InputError(path, "does not exist", "Pass --checkpoint FILE, the trained weights.")
    with stdout_to_stderr():  # the model's code runs here: what it prints must not land in --json's stdout
        return _load_checkpoint(path, options, reporter)


def _load_checkpoint(path: Path, options: PrepareOptions,
                     reporter) -> tuple[dict[str, torch.Tensor], str]:  # noqa: ANN001
    model_path = str(options.model_path) if options.model_path else None
    try:
        model = build_model(options.model, model_path, options.model_args, options.num_classes)
    except ModelError as exc:
        raise UsageError(f"--model {options.model}: {exc}", "Check --model, --model-path and --model-arg.") from exc
    with _on_path(model_path):  # a pickled module needs its class importable
        obj = _torch_load(path, reporter)
    state, form = find_state_dict(obj, path)
    keys = [k for k in state if not isinstance(k, str)]
    if keys:
        raise InputError(path, f"its {form} has key {keys[0]!r}, a {type(keys[0]).__name__}, not a parameter name",
                         "Save model.state_dict(), whose keys are names like 'conv.weight'.")
    state, stripped = strip_prefixes(state, set(model.state_dict()))
    if stripped:
        form += f", prefix {' + '.join(repr(p) for p in stripped)} stripped"
    try:
        check_finite(state)
        load_weights(model, state)
    except ModelError as exc:
        raise InputError(path, str(exc), f"Does it belong to --model {options.model} with these --model-arg and "
                         "--num-classes?") from exc
    _check_forward(model, options)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, form


def _torch_load(path: Path, reporter) -> Any:  # noqa: ANN001
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as weights_error:  # noqa: BLE001 - torch raises many types; the full load below decides
        try:
            # A pickled module (or a checkpoint holding other objects) only loads with full unpickling, which
            # runs code from the file: the user named it as their own checkpoint, and we say that we did this.
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise InputError(path, f"cannot be read by torch.load ({type(exc).__name__}: {exc})",
                             "Pass a file written with torch.save.") from exc
        reporter.warn(f"{path}: loaded with full unpickling (it holds more than tensors: "
                      f"{str(weights_error).splitlines()[0][:120]})")
        return obj


def find_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict inside whatever torch.load returned, and a description of where it was."""
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict()), "pickled module"
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), "state_dict"
        for key in CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                return dict(inner.state_dict()), f"checkpoint[{key!r}] (pickled module)"
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner), f"checkpoint[{key!r}]"
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        raise InputError(path, f"holds a dictionary without a state_dict (keys: {keys})",
                         f"Save the weights under one of {', '.join(CHECKPOINT_KEYS)}, or save model.state_dict().")
    raise InputError(path, f"holds a {type(obj).__name__}, not a state_dict, checkpoint or module",
                     "Save it with torch.save(model.state_dict(), path).")


def strip_prefixes(state: dict[str, torch.Tensor], model_keys: set[str]) -> tuple[dict[str, torch.Tensor],
                                                                                  tuple[str, ...]]:
    """Remove wrapper prefixes ('module.', 'model.', ...) that keep the keys from matching the model's."""
    stripped: list[str] = []
    while set(state) != model_keys:
        for prefix in KEY_PREFIXES:
            inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            # Either every key carries the prefix (a wrapper), or the prefixed keys are exactly the model's and
            # the rest belong to something else in the training module (a loss with buffers, say).
            if inner and (len(inner) == len(state) or set(inner) == model_keys) \
                    and not all(k.startswith(prefix) for k in model_keys):
                state = inner
                stripped.append(prefix)
                break
        else:
            break
    return state, tuple(stripped)


def _check_forward(model: torch.nn.Module, options: PrepareOptions) -> None:
    """Run one zero input through the model: the input size and the class count must fit the run."""
    channels, height, width = options.input_size
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, channels, height, width))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure in user code: this input does not fit
        raise UsageError(f"--model {options.model} fails on a 1x{channels}x{height}x{width} input: "
                         f"{type(exc).__name__}: {exc}", "Check --input-size.") from exc
    expected = (1, options.num_classes, height, width)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise UsageError(f"--model {options.model} returns {shape} for a 1x{channels}x{height}x{width} input, "
                         f"expected {expected} (one score map per class)", "Check --num-classes and --input-size.")


PREPARE_MANIFEST = "prepare.json"


# -- atomic output ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _staging(output_dir: Path) -> Iterator[Path]:
    # A unique name and a plain mkdir rather than mkdtemp: a new output directory keeps the umask's mode.
    staging = output_dir.parent / f".{output_dir.name}.prepare-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_output(options: PrepareOptions) -> None:
    """The output-directory rule (hostctl/staging.py) for prepare: replace only files an earlier prepare wrote."""
    out = options.output_dir
    inputs = [options.dataset] + [p for p in (options.checkpoint, options.model_path) if p is not None]
    resolved = out.resolve()
    for item in inputs:
        inp = item.resolve()
        if resolved == inp or inp in resolved.parents or resolved in inp.parents:
            raise InputError(out, f"output directory overlaps the input {item}",
                             "Write the deployment inputs outside the dataset, checkpoint and model code.")
    if out.is_dir():
        targets = [SAMPLES, PREPARE_MANIFEST] + ([STATE_DICT] if options.checkpoint else [])
        check_replaceable(out, targets, PREPARE_MANIFEST)


def _record(staging: Path, output_dir: Path, model: dict[str, Any] | None, command: str) -> None:
    """prepare.json lists every file prepare ever wrote here, so a later prepare may replace them; and says which
    model (class, arguments, classes, input size) the weights belong to, with the quantize command that uses them."""
    owned = owned_paths(output_dir, PREPARE_MANIFEST) if output_dir.is_dir() else None
    earlier = {n for n in (owned[0] | owned[1] if owned else set()) if (output_dir / n).exists()}
    names = {p.name for p in staging.iterdir()} | earlier | {PREPARE_MANIFEST}
    record = {"written": sorted(names), "model": model, "quantize_command": command}
    (staging / PREPARE_MANIFEST).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def model_record(options: PrepareOptions) -> dict[str, Any]:
    """What the weights in state_dict.pt belong to: quantize must build the same model to load them."""
    return {"model": options.model, "model_path": str(options.model_path) if options.model_path else None,
            "model_args": dict(options.model_args), "num_classes": options.num_classes,
            "input_size": list(options.input_size)}


def quantize_command(inputs_dir: Path, input_size: Sequence[int], num_classes: int, model: Mapping[str, Any] | None,
                     *, first: Sequence[str] = (), last: Sequence[str] = ()) -> str:
    """The `hostctl quantize` line that uses these deployment inputs with the model their weights were made for."""
    args = ["hostctl", "quantize", *first, "--input-dir", str(inputs_dir),
            "--input-size", *map(str, input_size), "--num-classes", str(num_classes)]
    if model is not None:
        if model["model"] != BUILTIN_MODEL:
            args += ["--model", model["model"]]
        if model.get("model_path"):
            args += ["--model-path", model["model_path"]]
        for key, value in model.get("model_args", {}).items():
            args += ["--model-arg", f"{key}={_model_arg_text(value)}"]
    return shlex.join([*args, *last])


def _model_arg_text(value: Any) -> str:
    """A --model-arg value that parses back to `value` (values are parsed as JSON where they parse)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, separators=(",", ":"))


def _publish(staging: Path, output_dir: Path) -> list[str]:
    """Move the finished files into output_dir, each with one rename; other files there are left alone."""
    names = sorted((p.name for p in staging.iterdir()), key=lambda n: n == PREPARE_MANIFEST)  # the list last
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.replace(staging / name, output_dir / name)
    return names


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:3])
    return shown + (f" and {len(items) - 3} more" if len(items) > 3 else "")
