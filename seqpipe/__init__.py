"""seqpipe: plugin-based pipelines for recurrent sequence models.

Plugins implement hooks from :mod:`seqpipe.hookspecs` marked with :data:`hookimpl`.
This module stays light: importing it loads neither torch nor onnxruntime.
"""

import pluggy

__version__ = "0.2.0"

hookimpl = pluggy.HookimplMarker("seqpipe")

# modules that moved still import, their names warning where they went (seqpipe.deprecation)
from seqpipe.deprecation import install_moved_module_finder  # noqa: E402

install_moved_module_finder()

__all__ = ["hookimpl", "__version__"]
