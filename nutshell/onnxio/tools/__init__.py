"""What uses ONNX files together with the backends: :mod:`.adapter` (ONNX's backend-test API over
a nutshell backend), :mod:`.compare` (per-node comparison), :mod:`.check` (``nutshell check``),
:mod:`.export` (``nutshell export``), :mod:`.zoo` (published architectures rebuilt with seeded
weights)."""
