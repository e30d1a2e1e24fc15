"""The built-in ``tag`` task (many-to-many tagging, one label per step), laid out as a plugin distribution lays out a
task:
``task.py`` trains and exports it (torch; entry-point group ``seqpipe``), ``serve.py`` serves its
ONNX files (torch-free; group ``seqpipe.serving``). Importing this package imports neither."""

from seqpipe.deprecation import moved_module

# until 0.2 this package was one module, seqpipe.builtin.tag: its names still resolve, with a warning
__getattr__ = moved_module(__name__, ("seqpipe.builtin.tag.task", "seqpipe.builtin.tag.serve"), removed_in="0.3")
