"""Building the model and loading its weights: shared by the payload and the host's input validation.

The host imports this module (and job.py) only, so that a model that will not build or a state_dict that will
not load is reported before any container starts.
"""

import contextlib
import importlib
import re
import sys
from typing import Any, Dict, Iterator, Mapping, Optional

import torch

CHECKPOINT_HINT = ("Convert it with `hostctl prepare --checkpoint FILE`, which accepts training checkpoints, "
                   "pickled modules and DataParallel's `module.` prefix")


class ModelError(ValueError):
    """The model cannot be built or its weights do not fit; the message says which and why."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.hint = hint


def _first_line(exc: BaseException) -> str:
    """One plain line of an exception's text (torch's load errors run to several lines with ANSI colour)."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", str(exc)).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    return line[:160] + ("..." if len(line) > 160 else "")


@contextlib.contextmanager
def _on_path(path: Optional[str]) -> Iterator[None]:
    if not path:
        yield
        return
    sys.path.insert(0, path)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(path)


def build_model(spec: str, model_path: Optional[str] = None, kwargs: Optional[Mapping[str, Any]] = None,
                num_classes: Optional[int] = None) -> torch.nn.Module:
    """Instantiate MODULE:CLASS with kwargs; the built-in Unet also gets num_classes unless kwargs set it."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ModelError("model {!r} is not MODULE:CLASS".format(spec))
    kwargs = dict(kwargs or {})
    from container_payload.job import BUILTIN_MODEL

    if spec == BUILTIN_MODEL and num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    with _on_path(model_path):
        try:
            module = importlib.import_module(module_name)
        except SystemExit as exc:  # user code that exits must not end the process that checks it
            raise ModelError("importing module {!r} called sys.exit({!r})".format(module_name, exc.code),
                             "Keep the module's script code under `if __name__ == '__main__':`") from None
        except Exception as exc:  # noqa: BLE001 - any failure while importing user code is the user's to fix
            raise ModelError("cannot import module {!r}: {}: {}".format(module_name, type(exc).__name__, exc)) from exc
        cls = getattr(module, class_name, None)
        if cls is None:
            raise ModelError("module {!r} has no attribute {!r}".format(module_name, class_name))
        call = "{}({})".format(class_name, ", ".join("{}={!r}".format(k, v) for k, v in kwargs.items()))
        try:
            model = cls(**kwargs)
        except SystemExit as exc:
            raise ModelError("{} called sys.exit({!r})".format(call, exc.code),
                             "Raise an exception in the constructor rather than exit") from None
        except Exception as exc:  # noqa: BLE001
            raise ModelError("{} failed: {}: {}".format(call, type(exc).__name__, exc)) from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelError("{} is not a torch.nn.Module".format(spec))
    return model


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except TypeError:  # torch < 1.13.0 has no weights_only
            state = torch.load(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt file
        text = str(exc)
        if re.search(r"GLOBAL|Unsupported global|Unsupported class", text):
            raise ModelError("holds pickled Python objects, not only tensors (a whole model or a training "
                             "checkpoint?)", CHECKPOINT_HINT) from exc
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        raise ModelError("cannot be read as a torch state_dict ({}: {})".format(
            type(exc).__name__, reason.group(1).strip() if reason else _first_line(exc)),
            "Save it with torch.save(model.state_dict(), path)") from exc
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = ", ".join(str(k) for k in list(state)[:4])
        raise ModelError("is not a state_dict but looks like a training checkpoint (keys: {})".format(keys),
                         CHECKPOINT_HINT)
    if not isinstance(state, Mapping):
        raise ModelError("does not hold a state_dict (a mapping of names to tensors) but a {}".format(
            type(state).__name__), "Save it with torch.save(model.state_dict(), path)")
    keys = [k for k in state if not isinstance(k, str)]
    if keys:
        raise ModelError("is not a state_dict: its key {!r} ({}) is not a parameter name ({} such key{})".format(
            keys[0], type(keys[0]).__name__, len(keys), "s" if len(keys) > 1 else ""),
            "Save it with torch.save(model.state_dict(), path), whose keys are names like 'conv.weight'")
    return dict(state)


def check_finite(state: Mapping[str, torch.Tensor]) -> None:
    """NaN or Inf in the weights would make every fix position meaningless: refuse them by name."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError("weight {!r} holds {} NaN or Inf value{}".format(name, bad, "s" if bad > 1 else ""),
                             "Check the training run that produced it, or export an earlier checkpoint")


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load strictly, with a message that lists what is missing, unexpected or mis-shaped."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [str(k) for k in state if k not in own]  # str: a key of another type is listed, not a crash
    mismatched = ["{} {} vs model {}".format(k, tuple(state[k].shape), tuple(own[k].shape))
                  for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", mismatched)):
        if items:
            shown = ", ".join(items[:3]) + (" and {} more".format(len(items) - 3) if len(items) > 3 else "")
            problems.append("{} {} ({})".format(len(items), label, shown))
    if problems:
        prefixed = unexpected and all(k.startswith("module.") for k in unexpected) and \
            {k[len("module."):] for k in unexpected} >= set(missing)
        raise ModelError("does not fit the model: " + "; ".join(problems),
                         CHECKPOINT_HINT if prefixed else None)
    model.load_state_dict(dict(state), strict=True)
