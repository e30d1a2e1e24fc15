"""The contract kit: checks that a cell, topology, task or input encoding of yours does what the
engine relies on, each raising ``AssertionError`` naming your class and what broke. Usually
imported from :mod:`seqpipe.testing` (the pytest plugin); ``seqpipe test-plugin DIST`` runs them on
every plugin of one installed distribution. Importing it imports no torch.
"""

from seqpipe.kit.cells import check_cell
from seqpipe.kit.common import LENGTHS, OPSET, fresh_registry
from seqpipe.kit.encodings import check_encoding
from seqpipe.kit.tasks import check_task, merge_tables, pipeline_tables, pipeline_toml
from seqpipe.kit.topologies import check_topology

__all__ = [
    "LENGTHS",
    "OPSET",
    "check_cell",
    "check_encoding",
    "check_task",
    "check_topology",
    "fresh_registry",
    "merge_tables",
    "pipeline_tables",
    "pipeline_toml",
]
