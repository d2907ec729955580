"""A TensorFlow backend for nutshell, living outside the repository's ``backends/`` package.

nutshell finds it only through the ``nutshell.backends`` entry point in this package's
``pyproject.toml`` (``tf = "nutshell_tf_backend:TfBackend"``): ``pip install -e`` this directory
and ``nutshell.load("tf")``, ``nutshell list`` and ``nutshell run -b tf`` see it.
"""

from nutshell_tf_backend.backend import TfBackend

__all__ = ["TfBackend"]
