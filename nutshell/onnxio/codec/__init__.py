"""ONNX files to and from the backend-neutral graph of spec concepts: :mod:`.files` (untrusted
files refused), :mod:`.structural` (shape-only operators), :mod:`.graph` (the graph's values and
steps), :mod:`.lowering` (ONNX nodes to spec concepts), :mod:`.reader` (a file in, a graph out, and
its executor on any backend), :mod:`.writer` (a spec model out)."""
