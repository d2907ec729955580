"""The conformance harness: the pytest plugin and its checks, the worker runner, the bench, results,
compare and the HTML report."""

if __name__ != "nutshell.conformance":  # the folder conformance/ installs as nutshell.conformance: one name
    raise ImportError("import nutshell.conformance, not conformance: nutshell installs one import package")
