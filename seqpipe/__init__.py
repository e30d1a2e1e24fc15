"""seqpipe: plugin-based pipelines for recurrent sequence models.

Plugins implement hooks from :mod:`seqpipe.hookspecs` marked with :data:`hookimpl`.
This module stays light: importing it loads neither torch nor onnxruntime.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("seqpipe")

__all__ = ["hookimpl", "__version__"]
