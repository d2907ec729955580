"""nutshell: the core concepts of deep learning as an executable spec, checked on several backends."""

__version__ = "0.1.0"
