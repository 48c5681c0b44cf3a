"""Herald: customer rollout communication campaigns.

Importing the package turns off Prefect's and Great Expectations' usage analytics, gives
Prefect's temporary server time to start on a loaded machine and lets a Prefect server it
starts record task runs in batches (unless the operator set these explicitly), before
either library is imported.
"""

import os

for _name, _value in {
    # Nothing calls out but the configured SendGrid host: analytics stay off by default.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Prefect's temporary server gives up after 20 s by default; on a 2-core machine under
    # load its start takes longer. (With PREFECT_API_URL set, no temporary server starts.)
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
    # A Prefect server (the temporary one, or one a Herald process starts) writes the task
    # runs it learns from the clients' events up to 100 at a time, at least once a second.
    # Prefect's default writes each event in a transaction of its own: a third of a core
    # during a phase's send, on the cores the send needs (docs/benchmarks.md).
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}.items():
    os.environ.setdefault(_name, _value)

# Prefect fails at import when its home folder is missing (var/ is not in a fresh clone).
if _prefect_home := os.environ.get("PREFECT_HOME"):
    os.makedirs(os.path.expanduser(_prefect_home), exist_ok=True)

__version__ = "0.1.0"
