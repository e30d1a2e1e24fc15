"""``seqpipe serve``: runs on MLServer (Open Inference Protocol "V2", REST and gRPC), each run as a
few models (:mod:`seqpipe.serving.v2_model`):

- ``NAME``: the task's predictor, raw inputs in, ``seqpipe predict --json``'s records out (tasks whose
  predictor reads a list of inputs);
- ``NAME-sequence``, ``NAME-step``: each of these ONNX graphs under its own contract, the state
  carried by the client (a seq2seq run's encoder and decoder, and a generate run's init graph, are
  driven together by the task's model).

Every model is versioned by its run's graphs (the first 12 hex digits of the SHA-256 over them), so a
retrained run is a new version. Torch-free; MLServer is imported only here, when a server starts.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqpipe.errors import SeqpipeError
from seqpipe.plugins import SERVING, load_registry
from seqpipe.serving.predict import predictor_for, spec_of

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
INSTALL = 'pip install "seqpipe[serve]"'


@dataclass(frozen=True)
class Served:
    """One model the server will load."""

    name: str
    role: str  # "task" or "graph"
    path: Path  # the run directory (task) or the .onnx file (graph)
    version: str
    what: str  # for the startup line

    def settings(self, device: str, max_batch_size: int, threads: int | None) -> dict[str, Any]:
        """MLServer's model settings (model-settings.json) for this model."""
        return {
            "name": self.name,
            "implementation": "seqpipe.serving.v2_model.SeqpipeModel",
            "parameters": {
                "uri": str(self.path.resolve()),
                "version": self.version,
                "extra": {"role": self.role, "device": device, "max_batch_size": max_batch_size, "threads": threads},
            },
        }


def parse_run(argument: str) -> tuple[str, Path]:
    """``RUN`` or ``NAME=RUN`` → (model name, run directory)."""
    name, sep, path = argument.partition("=")
    run = Path(path if sep else argument)
    name = name if sep else run.resolve().name
    if not NAME.match(name):
        raise SeqpipeError(
            f"{argument}: '{name}' cannot name a model (letters, digits, '_', '.', '-'); name it: NAME={run}."
        )
    return name, run


def graphs_of(run: Path) -> list[Path]:
    """A run's full-precision graphs (its int8/fp16 copies are served with --precision by predict only)."""
    folder = run / "onnx" if (run / "onnx").is_dir() else run
    found = [p for p in sorted(folder.glob("*.onnx")) if not p.name.endswith((".int8.onnx", ".fp16.onnx"))]
    if not found:
        raise SeqpipeError(f"{run}: no .onnx files in this directory or its onnx/ folder; pass a run directory.")
    return found


def version_of(graphs: list[Path]) -> str:
    digest = hashlib.sha256()
    for graph in graphs:
        digest.update(graph.name.encode() + b"\0" + graph.read_bytes())
    return digest.hexdigest()[:12]


def plan(runs: list[str]) -> tuple[list[Served], list[str]]:
    """Every model the runs give, checked (names unique, each run a directory of graphs), and a line
    for each graph left out: only step and sequence graphs are served alone (an encoder, a decoder or
    a generator's init graph is served through its task's model, which drives them together)."""
    registry, _ = load_registry(source=SERVING)
    served: list[Served] = []
    left_out: list[str] = []
    for argument in runs:
        name, run = parse_run(argument)
        if not run.is_dir():
            raise SeqpipeError(f"{run}: not a run directory; pass the folder seqpipe run wrote.")
        graphs = graphs_of(run)
        version = version_of(graphs)
        task = spec_of(run)["task"]
        has_task_model = predictor_for(task, registry, run).takes_inputs
        if has_task_model:
            served.append(Served(name, "task", run, version, f"{task}: text in, seqpipe predict's records out"))
        for graph in graphs:
            kind = spec_of(graph)["graph"]
            if kind in ("sequence", "step"):
                served.append(Served(f"{name}-{graph.stem}", "graph", graph, version, f"{graph.name}: tensors or text"))
            else:
                left_out.append(
                    f"{name}: {graph.name} ({kind} graph) is served through model '{name}' only"
                    if has_task_model
                    else f"{name}: {graph.name} ({kind} graph) is not served (task '{task}' has no model for a "
                    "list of inputs here; serve its graphs from their files in your own code)"
                )
    names = [s.name for s in served]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SeqpipeError(f"model name '{twice[0]}' is given twice; name the runs apart: NAME=RUN.")
    return served, left_out


def check_port(host: str, port: int, option: str) -> None:
    """Refuse a port another process holds, in one line, before MLServer starts (it would log a traceback)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SeqpipeError(f"{option} {port}: cannot listen on {host}:{port} ({exc.strerror}); pick another port.")


def check_ports(host: str, http_port: int, grpc_port: int, metrics_port: int) -> None:
    ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
    if len(set(ports.values())) < 3:
        raise SeqpipeError(f"{', '.join(f'{k} {v}' for k, v in ports.items())}: give three different ports.")
    for option, port in ports.items():
        check_port(host, port, option)


def start(
    served: list[Served],
    *,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    workers: int,
    device: str,
    max_batch_size: int,
    threads: int | None,
) -> None:
    """Run MLServer with ``served`` until it is stopped (Ctrl-C, SIGTERM)."""
    try:
        import asyncio

        from mlserver import MLServer
        from mlserver.settings import ModelSettings, Settings
    except ImportError:
        raise SeqpipeError(f"seqpipe serve runs on MLServer, which is not installed; install it: {INSTALL}") from None
    # MLServer's scratch folders (metrics shared by workers, environments) go to a temporary folder, not
    # the current one: serving leaves nothing behind in the user's folders
    scratch = tempfile.mkdtemp(prefix="seqpipe-serve-")
    settings = Settings(
        metrics_dir=str(Path(scratch) / "metrics"),
        environments_dir=str(Path(scratch) / "envs"),
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        parallel_workers=workers,
        load_models_at_startup=False,
        debug=False,
        server_name="seqpipe",
    )
    models = [ModelSettings(**s.settings(device, max_batch_size, threads)) for s in served]

    async def serve() -> None:
        # made inside the running loop: MLServer hooks SIGINT and SIGTERM to the loop it finds
        await MLServer(settings).start(models)

    try:
        asyncio.run(serve())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
