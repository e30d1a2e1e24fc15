"""`seqpipe serve`: a run on MLServer, spoken to with clients nobody here wrote (tritonclient's HTTP
and gRPC clients, and raw HTTP). The task model gives `seqpipe predict --json`'s records, the
sequence graph its probabilities, and a step graph streamed with the state carried by the client
gives the same numbers; bad requests get a 4xx and one line, and the server goes on serving. The
server runs where torch cannot be imported."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpipe.cli import main
from seqpipe.serving.predict import encoding_from_spec, predict, spec_of
from seqpipe.serving.server import version_of

TEXTS = ["FREE money!!! click now", "Re: meeting notes", "Ünïcode ✓ subject 🙂", "x"]
MAX_BATCH = 8
STATES = ("h", "c")  # an LSTM's


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classify LSTM (two states, h and c) whose first state is learned (a stream must start from it,
    not from zeros)."""
    from conftest import REPO, _write_pipeline

    root = tmp_path_factory.mktemp("serve")
    pipeline = _write_pipeline(root / "p.toml", REPO / "tests" / "data" / "subjects-300.jsonl", cell="lstm", hidden=8)
    pipeline.write_text(pipeline.read_text().replace("hidden_size = 8", 'hidden_size = 8\ninitial_state = "learnable"'))
    result = CliRunner().invoke(main, ["run", str(pipeline), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """`seqpipe serve spam=RUN` in a process that cannot import torch; (http, grpc) addresses."""
    from conftest import torch_blocked_environment

    env = torch_blocked_environment(tmp_path_factory.mktemp("blocker"))
    http, grpc, metrics = free_ports(3)
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "seqpipe", "serve", f"spam={trained}", "--http-port", str(http)]
            + ["--grpc-port", str(grpc), "--metrics-port", str(metrics), "--max-batch-size", str(MAX_BATCH)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
    deadline = time.monotonic() + 90
    while True:
        try:
            if client.is_server_ready() and all(client.is_model_ready(m) for m in ("spam", "spam-step")):
                break
        except Exception:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)
    yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
    process.terminate()  # SIGTERM: MLServer shuts down and the process ends
    assert process.wait(timeout=30) == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()


def _text_input(module, texts):
    entry = module.InferInput("text", [len(texts)], "BYTES")
    if module is httpclient:
        entry.set_data_from_numpy(np.array(texts, dtype=object), binary_data=False)
    else:
        entry.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    return entry


def _tensor(name, value):
    entry = httpclient.InferInput(name, list(value.shape), {np.int64: "INT64", np.float32: "FP32"}[value.dtype.type])
    entry.set_data_from_numpy(value, binary_data=False)  # MLServer speaks the protocol's JSON (no binary extension)
    return entry


def _strings(values) -> list[str]:
    """BYTES as text: tritonclient gives str from JSON and bytes from gRPC."""
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def _state(state: dict[str, np.ndarray] | None) -> list:
    return [_tensor(f"state_in.{name}", value) for name, value in (state or {}).items()]


def _state_out(result) -> dict[str, np.ndarray]:
    return {name: result.as_numpy(f"state_out.{name}") for name in STATES}


def _same_records(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert {k: v for k, v in g.items() if k != "probabilities"} == {
            k: v for k, v in e.items() if k not in ("probabilities", "line")
        }
        assert g["probabilities"].keys() == e["probabilities"].keys()
        assert max(abs(g["probabilities"][k] - e["probabilities"][k]) for k in e["probabilities"]) <= 1e-6


def test_task_and_sequence_models_give_predicts_answers(server, trained):
    http, _ = server
    client = httpclient.InferenceServerClient(http)
    expected = predict(trained, TEXTS)  # what `seqpipe predict --json` prints (less each line for people)
    result = client.infer("spam", [_text_input(httpclient, TEXTS)], parameters={"top_k": 2})
    _same_records([json.loads(r) for r in _strings(result.as_numpy("json"))], expected)
    assert _strings(result.as_numpy("label")) == [e["label"] for e in expected]
    probabilities = np.array([list(e["probabilities"].values()) for e in expected], dtype=np.float32)

    by_text = client.infer("spam-sequence", [_text_input(httpclient, TEXTS)])
    np.testing.assert_allclose(by_text.as_numpy("y"), probabilities, atol=1e-6, rtol=0)
    for name in STATES:
        assert by_text.as_numpy(f"state_out.{name}").shape == (len(TEXTS), 1, 8)

    # a client that encodes for itself from the file's seqpipe.spec, padding a ragged batch
    spec = spec_of(trained / "onnx" / "sequence.onnx")
    encoding = encoding_from_spec(spec["encoding"]["input"])
    ids = [encoding.encode(t) for t in TEXTS]
    x = np.zeros((len(ids), max(map(len, ids))), dtype=np.int64)
    for row, i in enumerate(ids):
        x[row, : len(i)] = i
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    by_ids = client.infer("spam-sequence", [_tensor("x", x), _tensor("lengths", lengths)])
    np.testing.assert_allclose(by_ids.as_numpy("y"), probabilities, atol=1e-6, rtol=0)


def test_streams_carry_their_own_state(server, trained):
    """Two streams interleaved on one server, one id per request, each request carrying its stream's
    state: each ends where predict's whole-text answer is."""
    http, _ = server
    client = httpclient.InferenceServerClient(http)
    spec = spec_of(trained / "onnx" / "step.onnx")
    encoding = encoding_from_spec(spec["encoding"]["input"])
    texts = TEXTS[:2]
    expected = [list(r["probabilities"].values()) for r in predict(trained, texts)]
    streams = [list(encoding.encode(t)) for t in texts]
    states: list[dict[str, np.ndarray] | None] = [None, None]
    last: list[np.ndarray | None] = [None, None]
    for t in range(max(map(len, streams))):
        for s, ids in enumerate(streams):
            if t >= len(ids):
                continue
            inputs = [_tensor("x", np.array([ids[t]], dtype=np.int64))]
            inputs += _state(states[s])
            result = client.infer("spam-step", inputs, parameters=None if states[s] is not None else {"start": True})
            states[s], last[s] = _state_out(result), result.as_numpy("y")
    for s in range(2):
        np.testing.assert_allclose(last[s][0], expected[s], atol=1e-6, rtol=0)

    # raw text in chunks, encoded by the server, the state carried the same way
    first = client.infer("spam-step", [_text_input(httpclient, ["FREE mo"])], parameters={"start": True})
    second = client.infer(
        "spam-step",
        [_text_input(httpclient, ["ney!!! click now"]), *_state(_state_out(first))],
    )
    whole = predict(trained, ["FREE money!!! click now"])[0]
    np.testing.assert_allclose(second.as_numpy("y")[0], list(whole["probabilities"].values()), atol=1e-6, rtol=0)
    assert _strings(second.as_numpy("label"))[0] == whole["label"]


def test_metadata_gives_each_models_spec_and_the_runs_version(server, trained):
    http, _ = server
    client = httpclient.InferenceServerClient(http)
    version = version_of(sorted((trained / "onnx").glob("*.onnx")))
    for name, graph in (("spam", "sequence.onnx"), ("spam-sequence", "sequence.onnx"), ("spam-step", "step.onnx")):
        meta = client.get_model_metadata(name)
        assert meta["versions"] == [version]
        assert json.loads(meta["parameters"]["seqpipe.spec"]) == spec_of(trained / "onnx" / graph)
        assert client.is_model_ready(name, version)
    step = {i["name"]: (i["datatype"], i["shape"]) for i in client.get_model_metadata("spam-step")["inputs"]}
    assert step == {"x": ("INT64", [-1]), "text": ("BYTES", [-1])} | {
        f"state_in.{name}": ("FP32", [-1, 1, 8]) for name in STATES
    }


def test_grpc_gives_the_same_records(server, trained):
    _, grpc = server
    client = grpcclient.InferenceServerClient(grpc)
    result = client.infer("spam", [_text_input(grpcclient, TEXTS)])
    _same_records([json.loads(r) for r in _strings(result.as_numpy("json"))], predict(trained, TEXTS))


def _post(http: str, model: str, body: object) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{http}/v2/models/{model}/infer",
        data=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _bytes(texts, name="text"):
    return {"name": name, "datatype": "BYTES", "shape": [len(texts)], "data": texts}


STATE_H = {"name": "state_in.h", "datatype": "FP32", "shape": [1, 1, 8], "data": [0.0] * 8}
BAD_REQUESTS = [
    ("nope", {"inputs": [_bytes(["hi"])]}, 404, "Model nope not found"),
    ("spam", {"inputs": [_bytes([])]}, 400, "shape [n] with n >= 1"),
    ("spam", {"inputs": [_bytes(["fine", ""])]}, 400, "input 2 is empty"),
    ("spam", {"inputs": [_bytes(["a"] * (MAX_BATCH + 1))]}, 413, f"takes at most {MAX_BATCH}"),
    ("spam", {"inputs": [_bytes(["hi"])], "parameters": {"top_kk": 1}}, 400, "takes no option 'top_kk'"),
    ("spam", {"inputs": [_bytes(["hi"])], "parameters": {"top_k": "two"}}, 400, "'two' is not int"),
    ("spam", {"inputs": [_bytes(["hi"], "x")]}, 400, "has no input 'x'"),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]},
        400,
        "datatype FP32, and the model reads INT64",
    ),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 2, 1], "data": [1, 2]}]},
        400,
        "shape [1, 2, 1], and the model reads [n, T]",
    ),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 3], "data": [1, 2]}]},
        400,
        "holds 3 values, and 2 were sent",
    ),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 5_000_000], "data": [1]}]},
        413,
        "request too large",
    ),
    (
        "spam-step",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [3]}]},
        400,
        "missing state_in.",
    ),
    (
        "spam-step",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [3]}, STATE_H]},
        400,
        "missing state_in.c: send the state_out.* of this stream's previous response",
    ),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 2], "data": [3, 4]}, STATE_H]},
        400,
        "missing state_in.c: send every state_in.* of the state you continue from, or none of them",
    ),
    (
        "spam-step",
        {"inputs": [_bytes(["a" * 41])], "parameters": {"start": True}},
        400,
        "longer than the model's max_length",
    ),
    ("spam", b'{"inputs": [', 422, ""),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 2], "data": [3, 100000]}]},
        400,
        "ids must be 0 to",
    ),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 2], "data": [-1, 3]}]},
        400,
        "ids must be 0 to",
    ),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 2], "data": [1.7, 3]}]},
        400,
        "INT64 data must be whole numbers (found float 1.7)",
    ),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 1], "data": [3]}, STATE_H | {"data": [1e40] * 8}]},
        400,
        "FP32 data out of range",
    ),
    (
        "spam-sequence",
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 1], "data": [3]}], "parameters": {"start": True}},
        400,
        "parameter 'start': model 'spam-sequence' takes none.",
    ),
]


@pytest.mark.parametrize(
    ("model", "body", "status", "said"), BAD_REQUESTS, ids=[str(i) for i in range(len(BAD_REQUESTS))]
)
def test_bad_requests_get_a_4xx_and_one_line(server, model, body, status, said):
    http, _ = server
    code, text = _post(http, model, body)
    assert code == status, text
    if said:
        message = json.loads(text)["error"]
        assert said in message and "\n" not in message and "Traceback" not in message
    # and the server goes on serving
    code, text = _post(http, "spam", {"inputs": [_bytes(["still serving?"])]})
    assert code == 200, text


def test_serve_refuses_what_it_cannot_serve_in_one_line(trained, tmp_path):
    runner = CliRunner()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = runner.invoke(main, ["serve", str(trained), "--http-port", str(port)])
    finally:
        taken.close()
    assert result.exit_code == 2 and f"--http-port {port}: cannot listen on 127.0.0.1:{port}" in result.output
    result = runner.invoke(main, ["serve", f"bad name={trained}"])
    assert result.exit_code == 2 and "'bad name' cannot name a model" in result.output
    result = runner.invoke(main, ["serve", f"a={trained}", f"a={trained}"])
    assert result.exit_code == 2 and "model name 'a' is given twice" in result.output
    result = runner.invoke(main, ["serve", str(tmp_path)])
    assert result.exit_code == 2 and "no .onnx files" in result.output


@settings(max_examples=5, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12), min_size=4, max_size=8), st.data())
def test_concurrent_ragged_requests_share_batches_and_match_alone(server, trained, lengths, data):
    """Requests of different lengths arriving together run as padded batches; each gets exactly the
    answer it gets alone (its rows, and its own time steps for per-step outputs)."""
    http, _ = server
    vocabulary = len(spec_of(trained / "onnx" / "sequence.onnx")["encoding"]["input"]["symbols"])
    requests = []
    for n in lengths:
        rows = data.draw(st.integers(min_value=1, max_value=2))
        ids = data.draw(st.lists(st.integers(2, vocabulary - 1), min_size=rows * n, max_size=rows * n))
        requests.append({"inputs": [{"name": "x", "datatype": "INT64", "shape": [rows, n], "data": ids}]})
    alone = [json.loads(_post(http, "spam-sequence", r)[1]) for r in requests]
    gate = threading.Barrier(len(requests))

    def together(request):
        gate.wait()
        return json.loads(_post(http, "spam-sequence", request)[1])

    shared = False
    for _ in range(3):  # the barrier lines the requests up; the server batches what arrives while it works
        with ThreadPoolExecutor(len(requests)) as pool:
            batched = list(pool.map(together, requests))
        for got, want, request in zip(batched, alone, requests):
            shared |= got["parameters"]["batch_rows"] > request["inputs"][0]["shape"][0]
            assert [o["name"] for o in got["outputs"]] == [o["name"] for o in want["outputs"]]
            for g, w in zip(got["outputs"], want["outputs"]):
                assert g["name"] == w["name"] and g["shape"] == w["shape"]
                if g["datatype"] == "BYTES":
                    assert g["data"] == w["data"]
                else:
                    np.testing.assert_allclose(g["data"], w["data"], atol=1e-6, rtol=0)
        if shared:
            break
    assert shared, "no two requests ever shared a batch"
