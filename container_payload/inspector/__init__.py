"""hostctl inspect, inside the payload: which ops of a model a DPU target can run, decided from the target's
limits as data (targets.py, from Vitis AI's target_factory) the way vai_q_pytorch's rule-based inspector decides.

Standard library only (no protobuf, no vai_utf): it runs in the Vitis AI image and in the portable backend alike.
"""
