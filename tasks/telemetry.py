"""Telemetry tasks: validate and load one batch file, publish what its contract said."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from herald.config import HeraldConfig
from herald.privacy import mask_email
from herald.settings import get_settings
from herald.telemetry.ingest import BatchRejected, IngestResult, ingest_file
from tasks.common import database

# Anything with an @ in it, as it may appear in a quarantined row's detail (well-formed or not).
_ADDRESS = re.compile(r"[^\s'\"=(),;<>]*@[^\s'\"(),;<>]*")


def mask_addresses(text: str) -> str:
    """``text`` with every e-mail-like token masked (``j***@example.com``)."""
    return _ADDRESS.sub(lambda match: mask_email(match.group()), text)


def _cell(text: str) -> str:
    return mask_addresses(text).replace("|", "\\|").replace("\n", " ")


def batch_markdown(result: IngestResult) -> str:
    """The batch as markdown: counts, the failed check, the first quarantined rows, Data Docs."""
    lines = [
        f"# Telemetry batch: {result.source} ({result.status})",
        "",
        "| | |",
        "| --- | --- |",
        f"| file | `{_cell(result.file)}` |",
        f"| batch | `{result.batch_id}` |",
        f"| status | **{result.status}** |",
        f"| rows | {result.rows} |",
        f"| loaded | {result.loaded} ({result.changed} new or changed) |",
        f"| quarantined | {result.quarantined} |",
    ]
    if result.rejected:
        lines += [
            f"| failed check | `{_cell(result.failed_check or '')}` |",
            f"| column | `{_cell(result.failed_column or '')}` |",
            f"| detail | {_cell(result.detail or '')} |",
        ]
        if result.kept_file is not None:
            lines.append(f"| raw file kept | `{_cell(str(result.kept_file))}` |")
    if result.source == "adoption" and not result.rejected:
        lines.append(
            f"| accounts | {result.accounts_migrated} marked migrated, "
            f"{result.accounts_in_progress} marked in progress |"
        )
    if result.data_docs is not None:
        lines.append(
            f"| Data Docs | [validation result]({result.data_docs.as_uri()}) `{result.data_docs}` |"
        )
    if result.first_quarantined:
        lines += [
            "",
            "## First quarantined rows",
            "",
            "| line | check | detail |",
            "| --- | --- | --- |",
        ]
        lines += [
            f"| {row.line} | `{_cell(row.check)}` | {_cell(row.detail)} |"
            for row in result.first_quarantined
        ]
        if result.quarantined > len(result.first_quarantined):
            lines.append(
                f"\n... and {result.quarantined - len(result.first_quarantined)} more in the "
                "`quarantine` table."
            )
    return "\n".join(lines) + "\n"


@task(name="ingest-telemetry-file", cache_policy=NO_CACHE)
def ingest_file_task(config: HeraldConfig, source: str, path: Path) -> IngestResult:
    """Validate one file against its source's contract and load it (or reject it whole).

    A rejected batch is returned, not raised: the flow goes on with the other files and fails
    at the end.
    """
    logger = get_run_logger()
    try:
        result = ingest_file(
            database(), config=config, source=source, path=path, var_dir=get_settings().var_dir
        )
    except BatchRejected as rejected:
        logger.error(f"{path.name}: {rejected}")
        return rejected.result
    logger.info(f"{path.name}: {result.message}")
    return result


@task(name="publish-telemetry-batch", cache_policy=NO_CACHE)
def publish_batch_task(result: IngestResult) -> str:
    """Publish the batch as the markdown artifact ``telemetry-<source>`` (e-mails masked)."""
    markdown = batch_markdown(result)
    create_markdown_artifact(
        key=f"telemetry-{result.source}",
        markdown=markdown,
        description=f"Herald telemetry: the last {result.source} batch and its data contract.",
    )
    return markdown
