"""seqpipe serve benchmark: the V2 server on loopback against the same predictor called in process.

    python benchmarks/server.py                 # trains pipelines/spam.toml for one epoch, then measures
    python benchmarks/server.py --run RUN       # a run you have (a classify run with a step graph)
    python benchmarks/server.py --quick         # fewer requests: a smoke run, not a measurement
    python benchmarks/server.py --json          # one JSON object

Rows, each for batch-1 requests (one subject line each, from the bundled spam data):
  in process        the task's predictor (what the server's task model runs), called in a loop
  server, conc. C   POST /v2/models/NAME/infer from C client threads (HTTP/1.1 keep-alive):
                    throughput, p50 and p99 latency, mean rows per batch the server ran
  overhead          server p50 at concurrency 1 / in-process p50 (the bar: at most 1.5)
  step, in process / server   one streamed step (x and the state in, y and the state out)
  load test         5,000 requests at concurrency 32: errors (non-200 or an answer that differs from
                    the in-process one by more than 1e-6) and the server's resident memory before,
                    after 1,000 and after 5,000 requests

In-process and server rounds alternate (3 each, medians kept) because this machine is shared and
noisy. The client threads share the machine's cores with the server, as a sidecar client would.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def subjects(count: int) -> list[str]:
    """Real subject lines from the bundled spam data, in file order."""
    import csv

    path = REPO / "seqpipe" / "datasets" / "spam_assassin" / "subjects.csv"  # bundled with seqpipe
    with open(path, newline="", encoding="utf-8") as fh:
        return [row["text"] for _, row in zip(range(count), csv.DictReader(fh))]


def train(folder: Path) -> Path:
    pipeline = folder / "spam-1epoch.toml"
    pipeline.write_text((REPO / "pipelines" / "spam.toml").read_text().replace("epochs = 25", "epochs = 1"))
    run = folder / "run"
    subprocess.run([sys.executable, "-m", "seqpipe", "run", str(pipeline), "--out", str(run)], check=True)
    return run


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Client:
    """One keep-alive HTTP connection; ``infer`` returns (latency s, status, parsed body)."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def infer(self, model: str, body: bytes) -> tuple[float, int, dict]:
        start = time.perf_counter()
        self.connection.request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        data = response.read()
        return time.perf_counter() - start, response.status, json.loads(data)


def text_request(text: str) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}).encode()


def in_process(run: Path, texts: list[str]) -> tuple[list[float], list[dict]]:
    from seqpipe.plugins import SERVING, load_registry
    from seqpipe.predictor import PredictOptions
    from seqpipe.serving.predict import predictor_for, task_of
    from seqpipe.serving.runtime import sessions_kept

    task = task_of(run)
    predictor = predictor_for(task, load_registry(source=SERVING)[0], run)
    options = PredictOptions("auto", "fp32", predictor.resolve_options(task, {}))
    times, results = [], []
    with sessions_kept():
        predictor().predict(run, texts[:1], options)  # warm: sessions opened once, as the server does at load
        for text in texts:
            start = time.perf_counter()
            (result,) = predictor().predict(run, [text], options)
            times.append(time.perf_counter() - start)
            result.pop("line")
            results.append(result)
    return times, results


def served(
    port: int, model: str, bodies: list[bytes], concurrency: int
) -> tuple[list[float], list[int], list[dict], float]:
    """(latencies, statuses, bodies, wall seconds) for ``bodies`` sent by ``concurrency`` threads."""
    clients = [Client(port) for _ in range(concurrency)]
    shares = [bodies[i::concurrency] for i in range(concurrency)]
    out: list[list[tuple[float, int, dict]]] = [[] for _ in range(concurrency)]

    def work(i: int) -> None:
        for body in shares[i]:
            out[i].append(clients[i].infer(model, body))

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, range(concurrency)))
    wall = time.perf_counter() - start
    ordered: list[tuple[float, int, dict]] = []
    for k in range(max(map(len, shares))):  # back in request order
        ordered += [out[i][k] for i in range(concurrency) if k < len(out[i])]
    return [o[0] for o in ordered], [o[1] for o in ordered], [o[2] for o in ordered], wall


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def same(got: dict, want: dict) -> bool:
    if {k: v for k, v in got.items() if k != "probabilities"} != {
        k: v for k, v in want.items() if k != "probabilities"
    }:
        return False
    return max(abs(got["probabilities"][k] - want["probabilities"][k]) for k in want["probabilities"]) <= 1e-6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a classify run directory (default: train spam.toml for one epoch)")
    parser.add_argument("--quick", action="store_true", help="fewer requests: a smoke run, not a measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    folder = Path(tempfile.mkdtemp(prefix="seqpipe-server-bench-"))
    run = args.run or train(folder)
    texts = subjects(400)
    name = "bench"
    http_port, grpc_port, metrics_port = free_ports(3)
    log = open(folder / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "seqpipe", "serve", f"{name}={run}", "--http-port", str(http_port)]
        + ["--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                Client(http_port).infer(name, text_request("warm up"))
                if has_step(run):
                    Client(http_port).infer(f"{name}-step", json.dumps(step_body(run)).encode())
                break
            except (OSError, http.client.HTTPException, json.JSONDecodeError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {(folder / 'server.log').read_text()}") from None
                time.sleep(0.3)
        report = measure(run, name, http_port, server.pid, texts, scale)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    report["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    report["date"] = time.strftime("%Y-%m-%d")
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"model: {report['model']}; {report['machine']}; {report['date']}")
    print(f"{'':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'rows/batch':>10}")
    for row in report["rows"]:
        print(
            f"{row['name']:22} {row['throughput']:8.1f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
            f"{row.get('mean_batch_rows', float('nan')):10.2f}"
        )
    print(f"overhead at batch 1, concurrency 1 (server p50 / in-process p50): {report['overhead']:.2f}x")
    step = report["step_p50_ms"]
    if step:
        print(
            f"one streamed step, p50: {step['in_process']:.3f} ms in process, {step['server']:.3f} ms through the "
            f"server ({step['server'] / step['in_process']:.1f}x)"
        )
    load = report["load_test"]
    print(
        f"load test: {load['requests']} requests at concurrency {load['concurrency']}: {load['errors']} errors, "
        f"{load['throughput']:.0f} req/s; server memory {load['rss_mb'][0]:.0f} -> {load['rss_mb'][1]:.0f} -> "
        f"{load['rss_mb'][2]:.0f} MB"
    )


def has_step(run: Path) -> bool:
    return (run / "onnx" / "step.onnx").is_file()


def step_body(run: Path, token: int = 3, state: dict[str, np.ndarray] | None = None) -> dict:
    inputs = [{"name": "x", "datatype": "INT64", "shape": [1], "data": [token]}]
    if state is None:
        return {"inputs": inputs, "parameters": {"start": True}}
    for name, value in state.items():
        shape, data = list(value.shape), value.ravel().tolist()
        inputs.append({"name": f"state_in.{name}", "datatype": "FP32", "shape": shape, "data": data})
    return {"inputs": inputs}


def describe(spec: dict, run: Path) -> str:
    direction = "bidirectional " if spec.get("causal") is False else ""
    kind = spec["encoding"]["input"]["kind"]
    return f"{direction}{spec['cell']} {spec['sizes']['hidden']} units over {kind} ({run})"


def measure_step(run: Path, name: str, port: int, count: int) -> dict[str, float]:
    """p50 of one streamed step: the server's step model against StepRunner.step in process."""
    from seqpipe.serving.runtime import StepRunner, run_file

    runner = StepRunner(run_file(run, "step.onnx"))
    state = runner.initial_state(1)
    x = np.array([3], dtype=np.int64)
    local, remote = [], []
    client = Client(port)
    body = json.dumps(step_body(run, 3, state)).encode()
    for _ in range(3):
        times = []
        for _ in range(count):
            start = time.perf_counter()
            runner.step(x, state)
            times.append(time.perf_counter() - start)
        local.append(pct(times, 50))
        times = [client.infer(f"{name}-step", body)[0] for _ in range(count)]
        remote.append(pct(times, 50))
    return {"in_process": statistics.median(local), "server": statistics.median(remote)}


def measure(run: Path, name: str, port: int, pid: int, texts: list[str], scale: float) -> dict:
    from seqpipe.serving.predict import spec_of

    count = max(40, int(len(texts) * scale))
    texts = texts[:count]
    bodies = [text_request(t) for t in texts]
    rows = []
    local_p50, server_p50 = [], []
    expected: list[dict] = []
    for _ in range(3):  # alternate: in process, then the server at concurrency 1
        times, expected = in_process(run, texts)
        local_p50.append(pct(times, 50))
        latencies, statuses, _, _ = served(port, name, bodies, 1)
        assert all(s == 200 for s in statuses)
        server_p50.append(pct(latencies, 50))
    rows.append(
        {
            "name": "in process",
            "throughput": 1000 / statistics.median(local_p50),
            "p50_ms": statistics.median(local_p50),
        }
        | {"p99_ms": pct(times, 99)}
    )
    for concurrency in (1, 8, 32):
        latencies, statuses, answers, wall = served(port, name, bodies * (1 if concurrency == 1 else 2), concurrency)
        rows.append(
            {
                "name": f"server, conc. {concurrency}",
                "throughput": len(latencies) / wall,
                "p50_ms": statistics.median(server_p50) if concurrency == 1 else pct(latencies, 50),
                "p99_ms": pct(latencies, 99),
                "mean_batch_rows": float(np.mean([a["parameters"]["batch_rows"] for a in answers])),
                "errors": sum(s != 200 for s in statuses),
            }
        )

    step = measure_step(run, name, port, count) if has_step(run) else None

    # the load test: every answer checked against the in-process one
    total = int(5000 * scale)
    plan = [i % len(texts) for i in range(total)]
    memory = [rss_mb(pid)]
    checked_errors = 0
    done = 0
    for chunk in (total // 5, total - total // 5):
        part = plan[done : done + chunk]
        latencies, statuses, answers, wall_part = served(port, name, [bodies[i] for i in part], 32)
        for i, status, answer in zip(part, statuses, answers):
            ok = status == 200 and same(json.loads(answer["outputs"][0]["data"][0]), expected[i])
            checked_errors += not ok
        memory.append(rss_mb(pid))
        done += chunk
    load_wall = wall_part  # the larger part's rate
    return {
        "model": describe(spec_of(run), run),
        "rows": rows,
        "overhead": statistics.median(server_p50) / statistics.median(local_p50),
        "step_p50_ms": step,
        "load_test": {
            "requests": total,
            "concurrency": 32,
            "errors": checked_errors,
            "throughput": (total - total // 5) / load_wall,
            "rss_mb": memory,
        },
    }


if __name__ == "__main__":
    threading.stack_size(1 << 20)
    main()
