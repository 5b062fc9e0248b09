"""The model as vai_q_pytorch sees it, in stages, each in its own module:

    trace.py   torch.jit's trace of the model and the graph passes nndct runs on it
    nndct.py   nndct's graph of that trace: BatchNorm folded, dropouts removed, nodes named and numbered as nndct does

Quantization groups those nodes (container_payload/backends/portable/groups.py); inspection turns them into
nndct's deployable graph (container_payload/inspector).
"""
