"""Everything that can be checked before a run starts, each failure one line naming the file and the fix."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from container_payload.job import SAMPLES, STATE_DICT, SUPPORTED_EXPORTS
from hostctl import staging
from hostctl.errors import InputError, UsageError
from hostctl.journal import JOURNAL_MARK
from hostctl.options import QuantizeOptions

PREPARE_HINT = "Create it with `hostctl prepare` or point --input-dir at the right directory."


@dataclass(frozen=True)
class Inputs:
    """Facts about validated inputs that later steps use."""

    state_dict: Path
    samples: Path
    num_calibration: int
    num_test: int
    has_labels: bool


def validate_quantize(opts: QuantizeOptions, *, check_model: bool = True) -> Inputs:
    _check_options(opts)
    input_dir = opts.input_dir
    if not input_dir.is_dir():
        raise InputError(input_dir, "input directory does not exist", PREPARE_HINT)
    state_dict, samples = input_dir / STATE_DICT, input_dir / SAMPLES
    for path in (state_dict, samples):
        if not path.is_file():
            raise InputError(path, "file not found", PREPARE_HINT)
    counts, has_labels = check_samples(samples, opts.input_size, opts.num_classes,
                                       {"calibration": opts.calib_limit, "test": opts.test_limit})
    if check_model:
        check_model_and_weights(opts, state_dict, has_labels)
    num_test = min(counts["test"], opts.test_limit or counts["test"])
    inputs = [input_dir, state_dict, samples] + [p for p in (opts.model_path, opts.requirements) if p is not None]
    check_output_dir(opts.output_dir, inputs, estimate_output_bytes(opts, num_test, state_dict))
    return Inputs(state_dict, samples, min(counts["calibration"], opts.calib_limit or counts["calibration"]),
                  num_test, has_labels)


def check_output_dir(output_dir: Path, inputs: Iterable[Path] = (), needed_bytes: int = 0) -> None:
    """staging.check_output_dir, after checking that the names hostctl puts beside the directory fit."""
    check_output_path_lengths(output_dir)
    staging.check_output_dir(output_dir, inputs, needed_bytes)


# A run id as staged_run makes them (staging.RUN_ID), and the longest path a run writes inside its staging or
# output directory (`.report.<12 hex>.tmp/per_class_iou.png`, `compiled_<board>/<Class>.xmodel`, with room for a
# long class name).
_RUN_ID = "20000101-000000-00000000"
_INNER_BYTES = 96


def check_output_path_lengths(output_dir: Path) -> None:
    """Refuse, before any work, an output directory whose own name or path leaves no room for the names a run
    puts beside and inside it (`.<name>.hostctl-journal-<id>.json.tmp` is the longest), against this file
    system's NAME_MAX and PATH_MAX: past them the run would fail half-way with ENAMETOOLONG."""
    try:
        resolved = output_dir.resolve(strict=False)
    except (RuntimeError, OSError):
        return  # a symlink loop: staging.check_output_dir names it
    existing = resolved
    while True:
        try:
            if existing.exists() or existing == existing.parent:
                break
        except OSError:  # ENAMETOOLONG on the way down from a path that is too long
            pass
        existing = existing.parent
    name_max, path_max = _limit(existing, "PC_NAME_MAX", 255), _limit(existing, "PC_PATH_MAX", 4096)
    name = resolved.name
    beside = [name, f".{name}{staging.TMP_MARK}{_RUN_ID}", f".{name}{staging.OLD_MARK}{_RUN_ID}",
              f".{name}{JOURNAL_MARK}{_RUN_ID}.json.tmp", f".{name}{staging.LOCK_MARK}",
              f"{name}{staging.FAILED_MARK}{_RUN_ID[:15]}-99"]
    longest = max(beside, key=lambda n: len(os.fsencode(n)))
    if len(os.fsencode(longest)) > name_max:
        raise InputError(_shown(output_dir), f"output directory name is {len(os.fsencode(name))} bytes long: the names "
                         f"hostctl puts beside it (such as '{longest[:24]}...{longest[-40:]}') would pass this file "
                         f"system's limit of {name_max} bytes per name",
                         f"Choose an --output-dir whose last part is at most "
                         f"{name_max - len(os.fsencode(longest)) + len(os.fsencode(name))} bytes long.")
    aside = resolved if existing == resolved and resolved.is_dir() and os.path.ismount(resolved) else resolved.parent
    deepest = len(os.fsencode(str(aside / longest))) + 1 + _INNER_BYTES
    if deepest >= path_max:
        room = path_max - 1 - (deepest - len(os.fsencode(str(resolved))))
        raise InputError(_shown(output_dir), f"output path is {len(os.fsencode(str(resolved)))} bytes "
                         f"long: with the names a run writes beside and inside it, paths would pass this system's "
                         f"limit of {path_max} bytes", f"Choose an --output-dir whose full path is at most {room} "
                         "bytes long.")


def _shown(path: Path) -> str:
    """A path of thousands of characters, shortened for a one-line message."""
    text = str(path)
    return text if len(text) <= 120 else f"{text[:40]}...{text[-70:]}"


def _limit(path: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(path, name))
    except (OSError, ValueError):
        return default


def estimate_output_bytes(opts: QuantizeOptions, num_test: int, state_dict: Path) -> int:
    """What a run writes, roughly: two float32 prediction files, an xmodel and files the size of the weights."""
    _, height, width = opts.input_size
    predictions = 2 * num_test * opts.num_classes * height * width * 4
    return predictions + 2 * state_dict.stat().st_size + 2_000_000


def _check_options(opts: QuantizeOptions) -> None:
    if any(n <= 0 for n in opts.input_size):
        raise UsageError(f"--input-size {' '.join(map(str, opts.input_size))}: every dimension must be positive",
                         "Pass the model's input as C H W, e.g. --input-size 3 512 512.")
    if opts.exports and opts.quantizer in SUPPORTED_EXPORTS:
        check_exports(opts.quantizer, opts.exports)
    if opts.model_path is not None and not opts.model_path.is_dir():
        raise InputError(opts.model_path, "--model-path is not a directory", "Pass the directory that holds "
                         "your model's module.")
    if opts.requirements is not None and not opts.requirements.is_file():
        raise InputError(opts.requirements, "requirements file not found", "Fix the --requirements path.")
    if opts.memory is not None:
        if opts.runtime != "docker":
            raise UsageError("--memory applies to --runtime docker only", "Drop --memory or use --runtime docker.")
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?[bkmg]?", opts.memory.lower()):
            raise UsageError(f"--memory {opts.memory!r} is not a size", "Write it like 512m or 8g.")
    if opts.python is not None and opts.runtime != "local":
        raise UsageError("--python applies to --runtime local only", "Drop --python or add --runtime local.")


def check_exports(quantizer: str, exports: Sequence[str], why: str = "") -> None:
    """Before any work: every --export is one that the quantizer (as resolved; `why` says how) can write."""
    supported = SUPPORTED_EXPORTS[quantizer]
    unsupported = [fmt for fmt in exports if fmt not in supported]
    if not unsupported:
        return
    others = [name for name, formats in SUPPORTED_EXPORTS.items() if all(fmt in formats for fmt in unsupported)]
    raise UsageError(f"the {quantizer} quantizer{why} cannot export {' or '.join(unsupported)}; it exports "
                     f"{' or '.join(supported) or 'nothing'}",
                     f"Use --export {' or --export '.join(supported)} or --export none; for "
                     f"{' and '.join(unsupported)}, --quantizer {' or '.join(others)} where pytorch_nndct imports "
                     "(the Vitis AI image, with --runtime docker).")


def check_samples(path: Path, input_size: tuple[int, int, int], num_classes: int | None = None,
                  limits: dict[str, int | None] | None = None) -> tuple[dict[str, int], bool]:
    """Every sample (up to its group's limit) and every label read once: shapes, types, NaN/Inf, links, classes."""
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"cannot be opened as HDF5 ({exc})", "Write it with h5py or `hostctl prepare`.") from exc
    limits = limits or {}
    with h5:
        counts = {}
        for group_name in ("calibration", "test"):
            group = h5.get(group_name)
            if not isinstance(group, h5py.Group):
                raise InputError(path, f"has no '{group_name}' group",
                                 f"Store {group_name} samples as datasets under /{group_name}.")
            names = list(group.keys())
            if not names:
                raise InputError(path, f"group '{group_name}' is empty", f"Add {group_name} samples to it.")
            for name in names[:limits.get(group_name) or len(names)]:
                item = _dataset(path, group, group_name, name)
                where = f"sample '{group_name}/{name}'"
                if tuple(item.shape) != tuple(input_size):
                    raise InputError(path, f"{where} has shape {list(item.shape)}, expected {list(input_size)}",
                                     "Preprocess to --input-size or pass the right --input-size.")
                if item.dtype.kind != "f":
                    raise InputError(path, f"{where} has dtype {item.dtype}, expected a float type",
                                     "Store preprocessed float32 samples.")
                if not np.isfinite(_read(path, item, where)).all():
                    raise InputError(path, f"{where} contains NaN or Inf", "Fix the preprocessing that produced it.")
            counts[group_name] = len(names)
        labels = h5.get("labels")
        if labels is not None:
            _check_labels(path, labels, list(h5["test"].keys())[:limits.get("test") or None], input_size,
                          num_classes)
    return counts, labels is not None


def _dataset(path: Path, group: h5py.Group, group_name: str, name: str) -> h5py.Dataset:
    """group[name] as a dataset, with one line for links that do not resolve, groups and empty datasets."""
    where = f"'{group_name}/{name}'"
    link = group.get(name, getlink=True)
    try:
        item = group[name]
    except (KeyError, OSError) as exc:
        target = (f" to {link.filename}:{link.path}" if isinstance(link, h5py.ExternalLink)
                  else f" to {link.path}" if isinstance(link, h5py.SoftLink) else "")
        raise InputError(path, f"{where} is a link{target} that does not resolve",
                         "Store the data itself, or make the link point at an existing dataset.") from exc
    if not isinstance(item, h5py.Dataset):
        raise InputError(path, f"{where} is a group, not a dataset", "Store each sample as a dataset.")
    if item.shape is None or item.size == 0:
        raise InputError(path, f"{where} is an empty dataset", "Store the sample's data, or remove the entry.")
    _check_filters(path, item, where)
    return item


# The registered ids of filters that come as plugins (https://github.com/HDFGroup/hdf5_plugins), for the message.
_PLUGIN_FILTERS = {307: "bzip2", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32013: "zfp",
                   32015: "zstd", 32017: "sz", 32026: "blosc2"}


def _check_filters(path: Path, item: h5py.Dataset, where: str) -> None:
    """A dataset compressed with a filter that this HDF5 cannot load (blosc, lz4, zstd... from a plugin) reads as
    an error naming a plugin directory: name the file, the dataset and the filter instead."""
    plist = item.id.get_create_plist()
    for index in range(plist.get_nfilters()):
        code, _flags, _values, raw_name = plist.get_filter(index)
        if not h5py.h5z.filter_avail(code):
            label = raw_name.decode(errors="replace").strip() if isinstance(raw_name, bytes) else str(raw_name)
            label = label or _PLUGIN_FILTERS.get(code, "")
            raise InputError(path, f"{where} is stored with HDF5 filter {code}{f' ({label})' if label else ''}, "
                             "which is not available here", "Write the file again without it (h5repack -f NONE, "
                             "or gzip compression, which every h5py reads), or make the plugin available "
                             "(HDF5_PLUGIN_PATH).")


def _read(path: Path, item: h5py.Dataset, where: str) -> np.ndarray:
    try:
        return item[()]
    except OSError as exc:
        raise InputError(path, f"{where} cannot be read ({exc})", "Write the file again, e.g. with `hostctl "
                         "prepare`.") from exc


def _check_labels(path: Path, labels: h5py.Group, test_names: list[str], input_size: tuple[int, int, int],
                  num_classes: int | None) -> None:
    if not isinstance(labels, h5py.Group):
        raise InputError(path, "'labels' is not a group", "Store one label map per test sample under /labels.")
    missing = [n for n in test_names if n not in labels]
    if missing:
        raise InputError(path, f"'labels' has no entry for test sample '{missing[0]}' ({len(missing)} missing)",
                         "Give every test sample a label map of the same name, or drop the labels group.")
    for name in test_names:
        item = _dataset(path, labels, "labels", name)
        if tuple(item.shape) != tuple(input_size[1:]) or item.dtype.kind not in "ui":
            raise InputError(path, f"label 'labels/{name}' has shape {list(item.shape)} and dtype {item.dtype}, "
                             f"expected {list(input_size[1:])} integers", "Store uint8 class maps [H,W].")
        data = _read(path, item, f"label 'labels/{name}'")
        low, high = int(data.min()), int(data.max())
        if low < 0:
            raise InputError(path, f"label 'labels/{name}' holds negative class {low}",
                             "Class ids run from 0 to --num-classes - 1.")
        if num_classes is not None and high >= num_classes:
            raise InputError(path, f"label 'labels/{name}' holds class {high}, but --num-classes is {num_classes}",
                             "Pass the right --num-classes, or fix the label maps.")


def check_model_and_weights(opts: QuantizeOptions, state_dict: Path, has_labels: bool = False) -> None:
    """Build the model, load the weights, run one forward at --input-size; remembered while nothing changed.

    Importing torch and a first forward cost seconds on the host, so a check that passed is recorded under a
    key made of everything it depends on (model spec and arguments, input size, the state_dict's size and
    mtime, the model code's files), and a re-run with the same inputs skips it.
    """
    marker = _validated_marker(opts, state_dict, has_labels)
    if marker is not None and marker.is_file():
        return
    _check_model_and_weights(opts, state_dict, has_labels)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(state_dict), encoding="utf-8")
        except OSError:
            pass  # a cache that cannot be written only costs time


# Part of the marker's key: raise it when the check below checks more, so that a model validated before is again.
_CHECKS_VERSION = 2


def _validated_marker(opts: QuantizeOptions, state_dict: Path, has_labels: bool) -> Path | None:
    import hashlib
    import json

    from container_payload.job import BUILTIN_MODEL
    from hostctl import __version__
    from hostctl.cache import cache_root

    def stamp(path: Path) -> list[object]:
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]

    code: list[list[object]] = []
    if opts.model_path is not None:
        code = [stamp(p) for p in sorted(opts.model_path.rglob("*.py"))[:5000]]
    elif opts.model == BUILTIN_MODEL:
        import container_payload  # the package alone: importing the model module would import torch

        code = [stamp(Path(container_payload.__file__).parent / "models" / "unet.py")]
    else:
        return None  # code we cannot fingerprint: check every time
    key = json.dumps([__version__, _CHECKS_VERSION, opts.model, opts.model_args, opts.num_classes,
                      list(opts.input_size), opts.evaluate, has_labels, stamp(state_dict), code], sort_keys=True,
                     default=str)
    return cache_root() / "validated" / hashlib.sha256(key.encode()).hexdigest()[:32]


def _check_model_and_weights(opts: QuantizeOptions, state_dict: Path, has_labels: bool) -> None:
    """The model's code runs here, on the host: what it prints goes to stderr, so that stdout stays --json's."""
    from hostctl.ui import stdout_to_stderr

    with stdout_to_stderr():
        output = _probe_model(opts, state_dict)
    _check_output_shape(opts, tuple(output.shape), has_labels)


def _probe_model(opts: QuantizeOptions, state_dict: Path):  # noqa: ANN202 - a torch.Tensor; torch loads lazily
    import torch

    from container_payload.loading import ModelError, build_model, check_finite, load_weights, read_state_dict

    try:
        model = build_model(opts.model, str(opts.model_path) if opts.model_path else None, opts.model_args,
                            opts.num_classes)
    except ModelError as exc:
        raise UsageError(f"--model {opts.model}: {exc}", f"{exc.hint}." if exc.hint else
                         "Check --model, --model-path and --model-arg.") from exc
    try:
        state = read_state_dict(str(state_dict))
        check_finite(state)
        load_weights(model, state)
    except ModelError as exc:
        raise InputError(state_dict, str(exc), exc.hint or "Save the state_dict of the same model class and "
                         "arguments.") from exc
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros((1, *opts.input_size)))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of user code on the declared input
        raise UsageError(f"--model {opts.model} fails on an input of shape {[1, *opts.input_size]}: "
                         f"{type(exc).__name__}: {exc}", "Check --input-size against what the model expects.") from exc
    if not isinstance(output, torch.Tensor):
        raise UsageError(f"--model {opts.model} returns {type(output).__name__}, not a tensor",
                         "Quantization needs a model with a single tensor output.")
    return output


def _check_output_shape(opts: QuantizeOptions, shape: tuple[int, ...], has_labels: bool) -> None:
    """The prediction files hold [1,classes,H,W] per sample (DESIGN.md section 4); the metrics compare the
    classes with --num-classes and the score maps with the [H,W] labels. Found here, not after the run."""
    probe = [1, *opts.input_size]
    where = f"--model {opts.model} returns shape {list(shape)} for an input of shape {probe}"
    if len(shape) != 4 or shape[0] != 1:
        raise UsageError(f"{where}, expected [1, classes, H, W] (one score map per class, batch first)",
                         "Return the batch dimension from forward, e.g. without squeeze(0).")
    if not opts.evaluate:
        return
    if shape[1] != opts.num_classes:
        raise UsageError(f"{where}: {shape[1]} classes, but --num-classes is {opts.num_classes}",
                         "Pass the model's class count with --num-classes, or --no-evaluate.")
    if has_labels and list(shape[2:]) != list(opts.input_size[1:]):
        raise UsageError(f"{where}: score maps of {list(shape[2:])}, but the labels are {list(opts.input_size[1:])}",
                         "Return score maps at the input's size, or --no-evaluate.")
