"""The ``herald`` command line: one sub-command per job, ``--help`` on each.

Exit codes scripts can rely on (:class:`ExitCode`): 0 done; 1 the work failed; 2 nothing
was done because the command, the config or an input file is invalid; 3 done, but some input
rows were rejected (see the rejects file).
"""

from herald.cli.app import app, main

__all__ = ["app", "main"]
