"""hostctl: quantize PyTorch models for AMD/Xilinx DPUs with one command."""

__version__ = "0.1.0"
