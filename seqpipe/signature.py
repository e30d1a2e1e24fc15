"""The names an exported graph's state tensors go by, spelled once (the ONNX contract, docs/onnx.md):
each state ``<name>`` a graph carries is read from the input ``state_in.<name>`` and written to the
output ``state_out.<name>``. Torch-free, at the bottom of the layers: export, serving, the kit and
the tasks all name states through it."""

from __future__ import annotations

STATE_IN = "state_in."
STATE_OUT = "state_out."


def state_input(name: str) -> str:
    """The graph input that carries state ``name`` into a call."""
    return STATE_IN + name


def state_output(name: str) -> str:
    """The graph output that carries state ``name`` out of a call."""
    return STATE_OUT + name
