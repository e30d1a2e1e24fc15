"""Contract checks for plugin authors, also loaded as a pytest plugin (``pytest11`` entry point).

Each check builds what seqpipe would build from your plugin, runs it on ragged batches (a single
step, the longest sequence, padding past it), exports the ONNX graphs the engine would write and
runs them in onnxruntime, and raises ``AssertionError`` naming your class and what broke::

    from seqpipe.testing import check_cell, check_encoding, check_task, check_topology

    def test_my_cell_honours_the_contract():
        check_cell(MyCell)                        # options: MyCell.example_options
        check_cell(MyCell, options={"activation": "tanh"})

    def test_my_topology_honours_the_contract():
        check_topology(MyTopology)                # stepped with a kit cell whose states differ in size
        check_topology(MyTopology, MyCell, options={"depth": 3})

    def test_my_task_honours_the_contract(seqpipe_registry):
        check_task(MyTask, registry=seqpipe_registry)   # on MyTask.example_pipeline's data

    def test_my_encoding_honours_the_contract():
        check_encoding(MyEncoding)                # fitted on a few texts (or number series)
        check_encoding(MyEncoding, options={"lowercase": True}, values=["My own", "examples"])

``export=False`` skips the ONNX part of ``check_cell`` and ``check_topology`` (milliseconds
instead of seconds: drive them with hypothesis over sizes and ragged ``lengths``).

Fixture ``seqpipe_registry``: a registry built by a fresh plugin manager, holding the built-ins
and every installed plugin (your own, once it is installed). The checks live in :mod:`seqpipe.kit`
(one module per contract; no pytest needed there, so ``seqpipe test-plugin`` runs them too) and never
import seqpipe's built-in plugins: they run on what the contracts (:mod:`seqpipe.contracts`)
declare, as the engine does. Module import stays light (no torch) because pytest loads it in every
session of an environment where seqpipe is installed.
"""

from __future__ import annotations

import pytest

from seqpipe.kit import (  # noqa: F401  (the kit, importable from here as it always was)
    LENGTHS,
    OPSET,
    check_cell,
    check_encoding,
    check_task,
    check_topology,
    fresh_registry,
    merge_tables,
    pipeline_tables,
    pipeline_toml,
)


@pytest.fixture
def seqpipe_registry():
    return fresh_registry()
