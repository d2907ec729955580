"""ONNX in and out, in two halves on either side of the backends.

* :mod:`nutshell.onnxio.codec` reads an ONNX file into the backend-neutral graph of spec concepts
  (file checks, structural operators, lowering) and writes spec models as ONNX. It needs only the
  spec, and every backend's ``import_onnx`` (the contract) uses it, so it sits below the backends.
* :mod:`nutshell.onnxio.tools` uses the backends: ONNX's node tests through a backend, per-node
  comparison of an imported model, ``nutshell check`` and ``nutshell export``, and the rebuilt
  GoogLeNet.
"""
