"""Training spec models on any backend: :mod:`.datasets` (bundled data, nothing downloaded) and
:mod:`.fit` (the SGD loop behind ``nutshell train``)."""
