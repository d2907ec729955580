"""A TensorFlow backend for nutshell, living outside the repository's ``backends/`` package.

nutshell finds it only through the ``nutshell.backends`` entry point in this package's
``pyproject.toml`` (``tf = "nutshell_tf_backend:TfBackend"``): ``pip install -e`` this directory
and ``nutshell.load("tf")``, ``nutshell list`` and ``nutshell run -b tf`` see it.

TensorFlow's C++ start-up lines (CPU instruction sets, oneDNN, absl's "before InitializeLog")
would print on every nutshell command, since every command that lists the backends loads this
one: ``TF_CPP_MIN_LOG_LEVEL`` is set to 2 (errors only) before TensorFlow is imported, unless it
is set already (``TF_CPP_MIN_LOG_LEVEL=0`` shows everything).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from nutshell_tf_backend.backend import TfBackend  # after the log level: it imports TensorFlow

__all__ = ["TfBackend"]
