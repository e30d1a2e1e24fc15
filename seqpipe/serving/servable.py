"""What ``seqpipe predict`` checks before it serves a model: that its run finished, that its files
are the ones the run wrote (the run directory's manifest) and that each graph passed its parity
check against torch. ``--unchecked`` skips these checks, and says so."""

from __future__ import annotations

from pathlib import Path

import onnx

from seqpipe import manifest
from seqpipe.errors import SeqpipeError
from seqpipe.runstate import STATUS_FILE, read_status, unfinished_hint
from seqpipe.serving.metadata import read_spec

UNCHECKED = "pass --unchecked to serve it anyway"


def check_servable(model: Path) -> None:
    """Refuse ``model`` (a run directory, a folder of graphs or one .onnx file) in one line unless
    what it serves is finished, intact and parity-checked."""
    if model.is_dir():
        status = read_status(model)
        if status is not None and status.get("state") != "done":
            raise SeqpipeError(f"{model}: {unfinished_hint(model, status)}")
        graphs = sorted((model / "onnx").glob("*.onnx")) + sorted(model.glob("*.onnx"))
        run_dir = model if status is not None else None
    elif model.is_file():
        graphs, run_dir = [model], _run_dir_of(model)
    else:
        return  # the runtime names the missing path
    fix = f"export it again (seqpipe run), or {UNCHECKED}"
    for graph in graphs:
        try:
            proto = onnx.load(str(graph), load_external_data=False)
        except Exception:
            if manifest.lists(graph, run_dir):  # a graph the run wrote, damaged since: said as such
                manifest.verify(graph, run_dir, fix=fix)
            return  # not ONNX at all: the runtime refuses it with the parser's words
        manifest.verify(graph, run_dir, fix=fix)
        _parity_passed(proto, graph)


def _run_dir_of(graph: Path) -> Path | None:
    """The run directory a graph lies in (``RUN/onnx/x.onnx`` or ``RUN/x.onnx``): the folder with a
    status.json; None for a file copied elsewhere (its own metadata is all there is to check)."""
    folder = manifest.run_dir_of(graph, STATUS_FILE)
    if folder is not None:
        status = read_status(folder)
        if status is not None and status.get("state") != "done":
            raise SeqpipeError(f"{graph}: {unfinished_hint(folder, status)}; or {UNCHECKED}")
    return folder


def _parity_passed(proto: onnx.ModelProto, graph: Path) -> None:
    parity = read_spec(proto, graph).get("parity")
    if not isinstance(parity, dict) or parity.get("passed") is not True:
        how = (
            "never checked (its run stopped before the parity check)"
            if not isinstance(parity, dict) or "passed" not in parity
            else "failed (torch and onnxruntime disagree beyond the tolerance)"
        )
        raise SeqpipeError(
            f"{graph}: its parity check against torch {how}, so its answers are not proven; serve a graph "
            f"whose run finished, or {UNCHECKED}."
        )
