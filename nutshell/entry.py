"""The ``nutshell`` console script: :func:`nutshell.cli.main`, with Ctrl-C during start-up handled.

Importing the command line takes a second or two (NumPy, the spec's modules), before
:func:`nutshell.cli.main` can catch anything: a Ctrl-C then was a KeyboardInterrupt traceback. Here it
is one line on stderr and exit status 130, as a Ctrl-C once a command runs. This module imports
nothing of nutshell's before that guard (``python -m nutshell.cli`` runs the same ``main``).
"""

from __future__ import annotations

import sys

INTERRUPTED = 130   # 128 + SIGINT, as the shell reports a Ctrl-C


def main() -> int:
    try:
        from nutshell import cli
    except KeyboardInterrupt:
        print("nutshell: interrupted while starting", file=sys.stderr)
        return INTERRUPTED
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
