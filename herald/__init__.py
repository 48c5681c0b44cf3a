"""Herald: customer rollout communication campaigns.

Importing the package turns off Prefect's and Great Expectations' usage analytics
(unless the operator set them explicitly), before either library is imported.
"""

import os

# Nothing calls out but the configured SendGrid host: analytics stay off by default.
for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ.setdefault(_name, _value)

# Prefect fails at import when its home folder is missing (var/ is not in a fresh clone).
if _prefect_home := os.environ.get("PREFECT_HOME"):
    os.makedirs(os.path.expanduser(_prefect_home), exist_ok=True)

__version__ = "0.1.0"
