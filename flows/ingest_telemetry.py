"""Flow: ingest every telemetry file waiting in the drop folder, each against its contract."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.run_names import ingest_run
from flows.status import STATUS_HOOKS
from herald.config import SOURCES, SourceName
from herald.settings import get_settings
from herald.telemetry.batch_file import SUFFIXES
from herald.telemetry.ingest import BatchesRejected, IngestResult
from tasks.common import preflight
from tasks.telemetry import ingest_file_task, publish_batch_task


class BatchSummary(BaseModel):
    """One file's outcome."""

    source: str
    file: str
    batch_id: str
    status: str
    rows: int
    loaded: int
    quarantined: int
    failed_check: str | None
    failed_column: str | None
    data_docs: str | None
    moved_to: str


class TelemetryIngestSummary(BaseModel):
    """What the run did."""

    batches: list[BatchSummary]

    @property
    def rejected(self) -> list[BatchSummary]:
        """The rejected batches."""
        return [batch for batch in self.batches if batch.status == "rejected"]


def pending_files(folder: Path) -> list[Path]:
    """Files waiting in ``folder`` (.csv, .jsonl, .ndjson), oldest first."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def move_to(path: Path, folder: Path, batch_id: str) -> Path:
    """Move ``path`` into ``folder`` (prefixed with the batch id if the name is taken)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        target = folder / f"{batch_id}-{path.name}"
    return Path(shutil.move(str(path), str(target)))


@flow(
    name="ingest-telemetry",
    flow_run_name=ingest_run,
    on_completion=STATUS_HOOKS,
    on_failure=STATUS_HOOKS,
)
def ingest_telemetry(
    source: SourceName | None = None,
    inbox: Path | None = None,
) -> TelemetryIngestSummary:
    """Ingest every file in ``<inbox>/<source>/`` (oldest first) against the source's contract.

    Each file goes to ``done/`` or ``rejected/`` beside it. The run fails at the end, after
    every file was processed, when any batch was rejected, naming the check and the column.

    Args:
        source: Only this source (default: every source).
        inbox: Drop folder with one sub-folder per source (default <HERALD_VAR_DIR>/inbox).
    """
    inbox = inbox or get_settings().var_dir / "inbox"
    sources = [source] if source else list(SOURCES)
    config = preflight("ingest-telemetry", telemetry=False)
    logger = get_run_logger()
    results: list[IngestResult] = []
    batches: list[BatchSummary] = []
    for source in sources:
        folder = inbox / source
        for path in pending_files(folder):
            result = ingest_file_task(config, source, path)
            publish_batch_task(result)
            moved = move_to(
                path, folder / ("rejected" if result.rejected else "done"), result.batch_id
            )
            results.append(result)
            batches.append(
                BatchSummary(
                    source=source,
                    file=result.file,
                    batch_id=result.batch_id,
                    status=result.status,
                    rows=result.rows,
                    loaded=result.loaded,
                    quarantined=result.quarantined,
                    failed_check=result.failed_check,
                    failed_column=result.failed_column,
                    data_docs=str(result.data_docs) if result.data_docs else None,
                    moved_to=str(moved),
                )
            )
    rejected = [result for result in results if result.rejected]
    logger.info(
        f"Ingested {len(results)} file(s) from {inbox}: "
        f"{len(results) - len(rejected)} loaded, {len(rejected)} rejected"
    )
    if rejected:
        raise BatchesRejected(rejected, len(results))
    return TelemetryIngestSummary(batches=batches)


if __name__ == "__main__":
    ingest_telemetry()
