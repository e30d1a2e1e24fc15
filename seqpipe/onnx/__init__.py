"""ONNX: graph building, the one masked Loop body, native RNN/GRU/LSTM operators, the graph spec, parity and
reduced-precision copies.

Nothing here imports the engine, serving or the built-in plugins: it learns what it needs from what
cells and topologies declare (see :mod:`seqpipe.contracts`)."""
