"""examples/kserve: the InferenceService's container runs `seqpipe serve` with arguments it takes,
listening where the manifest's port and readiness probe look; the image installs the serve extra
and starts `seqpipe serve`. (No cluster runs here: what can be checked without one is.)"""

from __future__ import annotations

import json
import re

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import yaml

from conftest import REPO
from seqpipe.cli import main
from seqpipe.serving.server import parse_run

EXAMPLE = REPO / "examples" / "kserve"


def _serve_params(args: list[str]) -> dict:
    context = main.commands["serve"].make_context("serve", list(args))  # raises on an option serve lacks
    return context.params


def test_the_manifest_runs_serve_where_kserve_looks():
    manifest = yaml.safe_load((EXAMPLE / "inference-service.yaml").read_text())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    (container,) = manifest["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe routes to
    params = _serve_params(container["args"])
    assert params["host"] == "0.0.0.0"
    (port,) = [p["containerPort"] for p in container["ports"]]
    assert port == params["http_port"] == 8080  # KServe's V2 REST port
    assert params["grpc_port"] == 8081
    (run,) = params["runs"]
    name, path = parse_run(run)
    assert str(path) == "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI
    assert {"name": "STORAGE_URI", "value": container["env"][0]["value"]} in container["env"]
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": f"/v2/models/{name}/ready", "port": port}


def test_the_image_installs_the_serve_extra_and_starts_serve():
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M).group(1))
    command = json.loads(re.search(r"^CMD (.+)$", dockerfile, re.M).group(1))
    assert entry == ["seqpipe", "serve"]
    assert _serve_params(command)["host"] == "0.0.0.0"
    assert '"/src[serve]"' in dockerfile and "download.pytorch.org/whl/cpu" in dockerfile
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("mlserver") for r in extras["serve"])
