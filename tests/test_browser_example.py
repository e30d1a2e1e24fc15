"""examples/browser: a static page that streams step.onnx with onnxruntime-web (WebAssembly) in
headless Chromium, scoring the text on every keystroke; after each keystroke its probabilities
equal seqpipe predict's for the text typed so far (within 1e-6)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REPO

EXAMPLES = REPO / "examples"
TYPED = "Free ✓ money 🙂 now"
SCREENSHOT = REPO / "docs" / "images" / "browser-example.png"


class Quiet(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args) -> None:  # the test's output stays the test's
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory, browser):
    """The example served as a user serves it: its folder, the shared spec reader beside it, its
    node_modules from npm ci, and a trained run's step.onnx as model/step.onnx."""
    root = tmp_path_factory.mktemp("site")
    data = REPO / "tests" / "data" / "subjects-300.jsonl"
    from conftest import _write_pipeline

    pipeline = _write_pipeline(root / "p.toml", data, hidden=8)
    pipeline.write_text(pipeline.read_text().replace("hidden_size = 8", 'hidden_size = 8\ninitial_state = "learnable"'))
    trained = subprocess.run(
        [sys.executable, "-m", "seqpipe", "run", str(pipeline), "--out", str(root / "run")],
        capture_output=True,
        text=True,
    )
    assert trained.returncode == 0, trained.stderr
    example = EXAMPLES / "browser"
    if not (example / "node_modules" / "onnxruntime-web").is_dir():  # the locked version
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=example, check=True, capture_output=True, timeout=600
        )
    served = root / "www"
    (served / "browser" / "model").mkdir(parents=True)
    for name in ("index.html", "app.mjs", "node_modules"):
        (served / "browser" / name).symlink_to(example / name)
    (served / "seqpipe-spec.mjs").symlink_to(EXAMPLES / "seqpipe-spec.mjs")
    (served / "browser" / "model" / "step.onnx").symlink_to(root / "run" / "onnx" / "step.onnx")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/browser/index.html"
    server.shutdown()


def _expected(run, texts: list[str]) -> list[dict[str, float]]:
    done = subprocess.run(
        [sys.executable, "-m", "seqpipe", "predict", str(run), *texts, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line)["probabilities"] for line in done.stdout.splitlines()]


def test_the_page_scores_every_keystroke_as_python_does(site, browser):
    root, url = site
    page = browser.new_page(viewport={"width": 900, "height": 600})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "response",
        lambda response: errors.append(f"{response.status} {response.url}") if response.status >= 400 else None,
    )
    page.goto(url)
    page.wait_for_function("window.seqpipe && window.seqpipe.ready", timeout=60_000)
    box = page.locator("#text")
    prefixes, seen = [], []
    for character in TYPED:
        box.press_sequentially(character)
        page.evaluate("window.seqpipe.pending")  # the keystroke's steps have run
        prefixes.append(box.input_value())
        seen.append(json.loads(page.locator("#scores").get_attribute("data-probabilities")))
    expected = _expected(root / "run", prefixes)
    for prefix, got, want in zip(prefixes, seen, expected):
        assert max(abs(got[label] - want[label]) for label in want) <= 1e-6, (prefix, got, want)
    assert page.locator("#scores").get_attribute("data-steps") == str(len(TYPED))  # one step per character, no rerun

    box.press("Backspace")  # not an append: the page starts the stream again from the first state
    page.evaluate("window.seqpipe.pending")
    again = json.loads(page.locator("#scores").get_attribute("data-probabilities"))
    want = _expected(root / "run", [TYPED[:-1]])[0]
    assert max(abs(again[label] - want[label]) for label in want) <= 1e-6
    assert errors == []
    if os.environ.get("SEQPIPE_WRITE_SCREENSHOTS") == "1":  # docs/images/browser-example.png, by hand
        page.screenshot(path=str(SCREENSHOT))
    page.close()
