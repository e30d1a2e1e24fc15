"""The built-in ``forecast`` task (forecasting real-valued series), laid out as a plugin distribution lays out a task:
``task.py`` trains and exports it (torch; entry-point group ``seqpipe``), ``serve.py`` serves its
ONNX files (torch-free; group ``seqpipe.serving``). Importing this package imports neither."""

from seqpipe.deprecation import moved_module

# until 0.2 this package was one module, seqpipe.builtin.forecast: its names still resolve, with a warning
__getattr__ = moved_module(
    __name__, ("seqpipe.builtin.forecast.task", "seqpipe.builtin.forecast.serve"), removed_in="0.3"
)
