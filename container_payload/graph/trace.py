"""The first stage of the model as vai_q_pytorch sees it: the torch.jit trace and the graph passes nndct runs on it.

What nndct does and where it says so (Xilinx/Vitis-AI src/vai_quantizer/vai_q_pytorch):
- Capture (pytorch_nndct/parse/trace_helper.py, pytorch_nndct/utils/jit_utils.py): torch.jit's tracer runs the
  model once on a concrete sample, so Python control flow on sizes is simply executed; the graph is inlined,
  tuples lowered, constants propagated, dead code removed, then canonicalized. While it traces, chunk and split
  are done by slicing (parse/override_torch_function.py), and a chain of slices becomes one strided_slice node
  (opt_pass.py slice_to_strided_slice). Graph inputs after the sample are
  the model's state_dict entries, which name the parameters. Each remaining aten op becomes a node named after
  its NNDCT_OP type (parse/op_dispatcher.py); an op the dispatcher does not know keeps its schema name
  (`aten::feature_dropout_` -> `aten_feature_dropout__N`) and runs in float ("new op ... as a float
  operator" in nndct's log). In-place forms count as their functional form only where the dispatcher has a
  method for them. prim:: nodes (list and tuple packing, scalar constants) are not nodes of nndct's graph; tensor
  constants, and the plain-number operand of add/sub/mul/div/rsub/remainder (parse/opt_pass.py
  `transform_const_scalar_to_const_tensor`), are `const` nodes numbered before everything else, the input
  included. Checked against vai_q_pytorch 3.5 on torch 1.13: its <Class>.py lists the same nodes in the same
  order on torchvision LR-ASPP/DeepLabV3 (MobileNetV3), smp FPN (MobileNetV2), DeepLabV3+ and U-Net (ResNet-18)
  and on the op zoo of tests/unit/test_portable_ops.py.
"""
import warnings
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Set, Tuple

import torch
from torch import nn

from container_payload.backends import BackendError


def state_dict(model: nn.Module) -> "Dict[str, torch.Tensor]":
    # the tracer's parameter inputs, in its order (torch.jit._unique_state_dict: state_dict entries, each tensor
    # once); nndct names them the same way (jit_utils.py rename_graph_param_name)
    seen: Set[int] = set()
    out: Dict[str, torch.Tensor] = {}
    for k, v in model.state_dict(keep_vars=True).items():
        if id(v) in seen:
            continue
        seen.add(id(v))
        out[k] = v.detach()
    return out


@contextmanager
def relu6_modules_as_relu(model: nn.Module, on: bool) -> Iterator[None]:
    """With equalization on, nndct swaps every nn.ReLU6 submodule for nn.ReLU before tracing
    (pytorch_nndct/qproc/utils.py `parse_module`, `replace_relu6_with_relu`, nndct_relu6_replace "relu"). Only
    modules: F.relu6 and nn.Hardtanh(0, 6) stay relu6 (seen on real runs: `nndct_relu6_N`, groups closed there).
    nndct keeps the swap; here the user's model gets its modules back."""
    swapped = []
    if on:
        for parent in list(model.modules()):
            for name, child in list(parent._modules.items()):
                if isinstance(child, nn.ReLU6):
                    parent._modules[name] = nn.ReLU(child.inplace)
                    swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in reversed(swapped):
            parent._modules[name] = child


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextmanager
def batchnorms_made_affine(model: nn.Module) -> Iterator[List[Tuple[str, nn.Module, nn.Module]]]:
    """nndct replaces every BatchNorm submodule with affine=False by a new one of the same class with affine=True
    (weight 1, bias 0) and the same running statistics before tracing (pytorch_nndct/qproc/utils.py
    replace_batchnorm_affine_false_with_true; it matches subclasses too). The new module is in training mode,
    so the traced graph also counts the batch in num_batches_tracked: an integer add of a const 1 that nndct
    numbers and configures with the other nodes. Yields (path, the user's module, its stand-in); the user's
    modules come back afterwards (nndct keeps the swap)."""
    swapped = []
    for path, parent in list(model.named_modules()):
        for name, child in list(parent._modules.items()):
            if not isinstance(child, _BATCHNORMS) or child.affine or child.running_mean is None:
                continue
            kind = next(k for k in _BATCHNORMS if isinstance(child, k))
            new = kind(child.num_features, eps=child.eps, momentum=child.momentum, affine=True,
                       track_running_stats=child.track_running_stats)
            with torch.no_grad():
                new.running_mean.copy_(child.running_mean)
                new.running_var.copy_(child.running_var)
            new.to(child.running_mean.device)
            parent._modules[name] = new
            swapped.append((parent, name, child, new, (path + "." if path else "") + name))
    try:
        yield [(full, child, new) for _, _, child, new, full in swapped]
    finally:
        for parent, name, child, _, _ in reversed(swapped):
            parent._modules[name] = child


def trace(model: nn.Module, sample: torch.Tensor):
    prefix = type(model).__name__
    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as e:  # noqa: BLE001 - the model's own failure, reported with its cause
        raise BackendError("the model failed on a sample of shape {}: {}: {}".format(
            tuple(sample.shape), type(e).__name__, _first_line(e))) from e
    if not isinstance(out, torch.Tensor):
        what = ("a dict with keys {}".format(", ".join(repr(k) for k in out)) if isinstance(out, dict)
                else "a {}".format(type(out).__name__))
        raise BackendError("{}.forward returns {}; the quantizer needs one tensor: wrap the model so that forward "
                           "returns it (e.g. model(x)['out'])".format(prefix, what))
    get = getattr(torch.jit, "_get_trace_graph", None) or torch.jit._trace._get_trace_graph
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings: control flow on sizes is traced for this shape
            graph, _ = get(model, (sample.as_subclass(_SlicedSplits),))
    except Exception as e:  # noqa: BLE001 - any tracing failure is reported with its cause
        raise BackendError("the portable quantizer could not trace {} with torch.jit: {}: {}".format(
            prefix, type(e).__name__, _first_line(e))) from e
    # pytorch_nndct/utils/jit_utils.py optimize_graph (torch >= 1.9)
    C = torch._C
    C._jit_pass_inline(graph)
    C._jit_pass_inline_fork_wait(graph)
    C._jit_pass_lower_all_tuples(graph)
    C._jit_pass_constant_propagation(graph)
    # a constant list holding tensors (`x[:, idxs]` with a buffer outside the state_dict: List[Optional[Tensor]])
    # is split into a ListConstruct of one constant per tensor, as _optimize_graph_19 does
    _split_tensor_list_constants(graph)
    C._jit_pass_dce(graph)
    C._jit_pass_canonicalize_graph_fuser_ops(graph)
    C._jit_pass_peephole(graph, True)
    C._jit_pass_fuse_addmm(graph)
    graph = C._jit_pass_canonicalize(graph)
    return graph


def _split_tensor_list_constants(graph) -> None:
    """torch.onnx.utils._split_tensor_list_constants (torch 1.13), which pytorch_nndct/utils/jit_utils.py
    _optimize_graph_19 runs right after constant propagation: every prim::Constant whose value is a list of
    tensors (or of optional tensors) becomes a prim::ListConstruct of one prim::Constant per element. Unlike
    torch's, the list keeps its type: typed List[Tensor], `x[:, idxs]` (aten::index with [None, idxs]) would
    resolve to the overload index.Tensor_hacked_twin, which refuses the None."""
    for node in list(graph.nodes()):
        if node.kind() != "prim::Constant":
            continue
        t = node.output().type()
        if not (t.isSubtypeOf(torch._C.ListType.ofTensors()) or
                t.isSubtypeOf(torch._C.ListType(torch._C.OptionalType.ofTensor()))):
            continue
        inputs = []
        for val in node.output().toIValue():
            v = graph.insertConstant(val)
            v.node().moveBefore(node)
            v.node().copyMetadata(node)
            inputs.append(v)
        lc = graph.create("prim::ListConstruct", inputs).insertBefore(node).output().setType(t)
        lc.node().copyMetadata(node)
        node.output().replaceAllUsesWith(lc)


class _SlicedSplits(torch.Tensor):
    """The sample while nndct traces: chunk and split are done by slicing, the last piece ending at the traced
    size of the dimension (pytorch_nndct/parse/override_torch_function.py, TraceTensorMode); every other torch
    function runs as usual (its results stay of this class, so the whole forward is covered)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.chunk, torch.Tensor.chunk):
            return _chunk_by_slices(*args, **kwargs)
        if func in (torch.split, torch.Tensor.split):
            return _split_by_slices(*args, **kwargs)
        return super().__torch_function__(func, types, args, kwargs)


def _slices(x: torch.Tensor, dim: int, bounds: List[Tuple[int, Optional[int]]]) -> Tuple[torch.Tensor, ...]:
    dim = dim % x.dim()
    pieces = []
    for start, end in bounds:
        index = [slice(None, None)] * x.dim()
        index[dim] = slice(start, x.shape[dim] if end is None else end)
        pieces.append(x[tuple(index)])
    return tuple(pieces)


def _chunk_by_slices(x: torch.Tensor, chunks: int, dim: int = 0) -> Tuple[torch.Tensor, ...]:
    n = int(x.shape[dim])
    size = -(-n // chunks)
    count = -(-n // size) if size else chunks
    return _slices(x, dim, [(k * size, None if k == count - 1 else (k + 1) * size) for k in range(count)])


def _split_by_slices(x: torch.Tensor, split_size_or_sections, dim: int = 0) -> Tuple[torch.Tensor, ...]:
    if isinstance(split_size_or_sections, int):
        n = int(x.shape[dim])
        size = split_size_or_sections
        count = max(1, -(-n // size))
        return _slices(x, dim, [(k * size, None if k == count - 1 else (k + 1) * size) for k in range(count)])
    bounds, start = [], 0
    for size in split_size_or_sections:
        bounds.append((start, start + int(size)))
        start += int(size)
    return _slices(x, dim, bounds)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""
