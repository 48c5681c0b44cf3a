"""The customers data contract run over an accounts export, before ``herald customers import``.

A pre-check with Data Docs: the file is read as the telemetry batches are and checked
against ``config/expectations/customers.json``; nothing is loaded, and the import's own row
checks are unchanged.
"""

from __future__ import annotations

from pathlib import Path

from herald.settings import get_settings
from herald.telemetry.batch_file import read_file
from herald.telemetry.contracts import ContractReport, check_suite, load_suite, run_suite
from herald.telemetry.validation_frame import frame_start, text_values

CUSTOMER_SUITE = "customers"
_LOWERED = ("lifecycle", "migration_state")


def validate_customer_file(
    path: Path, *, config_dir: Path | None = None, gx_root: Path | None = None
) -> ContractReport:
    """Check an accounts CSV against ``config/expectations/customers.json``; load nothing.

    Values are compared as the import reads them: stripped, empty as null, ``lifecycle``
    and ``migration_state`` lower-cased.
    """
    import pandas as pd  # type: ignore[import-untyped]

    settings = get_settings()
    suite = load_suite(config_dir or settings.config_dir, CUSTOMER_SUITE)
    check_suite(suite)
    content = read_file(path)
    data = frame_start(content.records)
    for name in content.columns:
        if name not in data:
            values = text_values(content.records, name, lower=name in _LOWERED)
            data[name] = pd.Series(values, dtype=object)
    return run_suite(pd.DataFrame(data), suite, {}, gx_root=gx_root or settings.var_dir)
