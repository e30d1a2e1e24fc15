"""The pipeline files on the "Your own data" pages (docs/data/) are real: each one, with the data
files shown beside it, passes `seqpipe check`.

A fenced block with a title is a file: ```toml title="reviews.toml"``` is a pipeline file, any other
titled block (```text title="reviews.csv"```) a data file. Every file of a page is written to one
folder as shown, then `python -m seqpipe check` runs on each pipeline file there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGES = sorted((Path(__file__).resolve().parents[1] / "docs" / "data").glob("*.md"))
BLOCK = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```$', re.S | re.M)


def _files(page: Path) -> dict[str, tuple[str, str]]:
    """name -> (language, content) of every titled block on the page."""
    files = {}
    for language, name, content in BLOCK.findall(page.read_text(encoding="utf-8")):
        assert name not in files, f"{page.name}: two blocks titled {name}"
        files[name] = (language, content)
    return files


def _pipelines():
    for page in PAGES:
        for name, (language, _) in _files(page).items():
            if language == "toml" and name.endswith(".toml"):
                yield pytest.param(page, name, id=f"{page.stem}/{name}")


def test_every_task_has_a_page_with_a_pipeline():
    pages = {page.stem for page in PAGES}
    assert {"classify", "tag", "forecast", "generate", "seq2seq"} <= pages, pages
    for page in PAGES:
        assert any(n.endswith(".toml") for n in _files(page)), f"{page.name} shows no pipeline file"


@pytest.mark.parametrize("page,pipeline", list(_pipelines()))
def test_docs_pipeline_checks(page, pipeline, tmp_path):
    for name, (_, content) in _files(page).items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "seqpipe", "check", pipeline], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{page.name}: {pipeline}\n{proc.stdout}\n{proc.stderr}"
    task = re.search(r'^name = "(\w+)"', _files(page)[pipeline][1], re.M)
    assert task and task.group(1) == page.stem, f"{page.name}: {pipeline} is not a {page.stem} pipeline"
