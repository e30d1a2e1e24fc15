"""examples/node: a Node.js program that reads seqpipe.spec from the ONNX files to encode and decode
on its own (onnxruntime-node) gives seqpipe predict's probabilities, from the sequence graph and
streamed through the step graph (`node --test`, against `seqpipe predict --json` on the same texts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

EXAMPLE = REPO / "examples" / "node"
TEXTS = ["FREE money!!! click now", "Re: meeting notes", "Ünïcode ✓ subject 🙂", "x"]

needs_node = pytest.mark.skipif(
    shutil.which("node") is None and os.environ.get("SEQPIPE_REQUIRE_NODE") != "1",
    reason="Node.js is not installed (CI sets SEQPIPE_REQUIRE_NODE=1 and has it)",
)


@needs_node
def test_node_gives_predicts_probabilities(tmp_path, write_pipeline):
    data = REPO / "tests" / "data" / "subjects-300.jsonl"
    pipeline = write_pipeline(tmp_path / "p.toml", data, hidden=8)
    pipeline.write_text(pipeline.read_text().replace("hidden_size = 8", 'hidden_size = 8\ninitial_state = "learnable"'))
    run = tmp_path / "run"
    trained = subprocess.run(
        [sys.executable, "-m", "seqpipe", "run", str(pipeline), "--out", str(run)], capture_output=True, text=True
    )
    assert trained.returncode == 0, trained.stderr
    predicted = subprocess.run(
        [sys.executable, "-m", "seqpipe", "predict", str(run), *TEXTS, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps([json.loads(line) for line in predicted.stdout.splitlines()]), encoding="utf-8")

    if not (EXAMPLE / "node_modules" / "onnxruntime-node").is_dir():  # the locked version, its CPU binaries bundled
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=EXAMPLE,
            check=True,
            capture_output=True,
            env={**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"},
            timeout=600,
        )
    tested = subprocess.run(
        ["node", "--test"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SEQPIPE_RUN": str(run), "SEQPIPE_EXPECTED": str(expected)},
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "# pass 3" in tested.stdout and "# fail 0" in tested.stdout and "# skipped 0" in tested.stdout
