"""Data contracts: the versioned GX suites in ``config/expectations/`` and running them.

A suite file is plain JSON, one per source, edited by hand and versioned with the code::

    {"name": "survey", "version": 1, "description": "...",
     "expectations": [{"type": "expect_column_values_to_not_be_null",
                       "kwargs": {"column": "response_id"},
                       "meta": {"level": "row", "notes": "..."}}, ...]}

``type``/``kwargs``/``meta`` are Great Expectations' own expectation configuration;
``meta.level`` says what a failure means: ``row`` quarantines the rows that fail it,
``batch`` rejects the whole file. Suite parameters are written ``{"$PARAMETER": "name"}``
and supplied per run (the known account ids, ``now``, the row-count bounds); an expectation
whose parameter is not supplied, or whose columns the file lacks, is left out of that run
(the column-set check then says which column is missing).

Great Expectations is imported only inside :func:`run_suite` (it takes seconds to import).
Every run goes through a file-backed GX context under ``<var_dir>/gx`` and builds its Data
Docs; the path of the validation result page comes back in the report.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

Level = Literal["row", "batch"]
LEVELS: tuple[Level, ...] = ("row", "batch")
EXPECTATIONS_DIR = "expectations"
LINE = "line"
"""The column that carries each row's 1-based line number in the file."""
HELPER_SEPARATOR = "__"
"""Helper columns Herald derives from a file column are named ``<column>__<what>``."""
DATASOURCE = "herald-telemetry"


class ContractError(Exception):
    """A suite file is missing or invalid; nothing can be validated against it."""


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation of a suite file, and what its failure means."""

    type: str
    kwargs: dict[str, Any]
    level: Level
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Every column the expectation reads (its domain and its row condition)."""
        names: list[str] = []
        for key in ("column", "column_A", "column_B"):
            if isinstance(self.kwargs.get(key), str):
                names.append(self.kwargs[key])
        names.extend(str(name) for name in self.kwargs.get("column_list") or [])
        names.extend(_condition_columns(self.kwargs.get("row_condition")))
        return names

    @property
    def column(self) -> str | None:
        """The column the expectation is about (comma-joined for a pair or a list)."""
        domain = [
            str(self.kwargs[key])
            for key in ("column", "column_A", "column_B")
            if isinstance(self.kwargs.get(key), str)
        ]
        domain.extend(str(name) for name in self.kwargs.get("column_list") or [])
        return ",".join(domain) or None

    @property
    def check(self) -> str:
        """``type(column)``, or ``type`` for a table-level expectation: how failures are named."""
        column = self.column
        return f"{self.type}({column})" if column else self.type

    @property
    def parameters(self) -> set[str]:
        """Names of the suite parameters the expectation needs."""
        return set(_parameters(self.kwargs))


@dataclass(frozen=True)
class Suite:
    """A versioned suite file."""

    name: str
    version: int
    path: Path
    description: str
    expectations: tuple[ExpectationSpec, ...]

    @property
    def gx_name(self) -> str:
        """The suite's name in GX (and in Data Docs): ``<name>-v<version>``."""
        return f"{self.name}-v{self.version}"


@dataclass(frozen=True)
class BatchFailure:
    """A batch-level expectation that failed (or an expectation that could not run)."""

    check: str
    type: str
    column: str | None
    detail: str
    observed: Any = None
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowFailure:
    """One row-level expectation one row failed, with the value it saw."""

    check: str
    column: str | None
    value: Any


@dataclass
class ContractReport:
    """What a suite said of a batch."""

    suite: str
    evaluated: int
    skipped: list[str]
    batch_failures: list[BatchFailure]
    row_failures: dict[int, list[RowFailure]]
    data_docs: Path | None

    @property
    def bad_lines(self) -> list[int]:
        """Lines that failed at least one row-level expectation, in file order."""
        return sorted(self.row_failures)


# --------------------------------------------------------------------------- suite files


def suite_path(config_dir: Path, name: str) -> Path:
    """Where the suite file of ``name`` lives."""
    return config_dir / EXPECTATIONS_DIR / f"{name}.json"


def load_suite(config_dir: Path, name: str) -> Suite:
    """Read and check ``<config_dir>/expectations/<name>.json`` (ContractError if invalid)."""
    path = suite_path(config_dir, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ContractError(f"{path}: suite file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ContractError(f"{path}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise ContractError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
    return parse_suite(data, path, expected_name=name)


def parse_suite(data: Any, path: Path, expected_name: str | None = None) -> Suite:
    """Check a suite file's content; every problem is reported at once."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ContractError(f"{path}: expected a JSON object at the top level")
    unknown = sorted(set(data) - {"name", "version", "description", "expectations", "meta"})
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        problems.append("'name' must be a non-empty string")
    elif expected_name is not None and name != expected_name:
        problems.append(f"'name' is {name!r} but the file is for {expected_name!r}")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append("'version' must be a positive integer")
    expectations = data.get("expectations")
    specs: list[ExpectationSpec] = []
    if not isinstance(expectations, list) or not expectations:
        problems.append("'expectations' must be a non-empty list")
        expectations = []
    for index, item in enumerate(expectations):
        where = f"expectations[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected an object")
            continue
        extra = sorted(set(item) - {"type", "kwargs", "meta"})
        if extra:
            problems.append(f"{where}: unknown key(s) {', '.join(extra)}")
        kind, kwargs, meta = item.get("type"), item.get("kwargs", {}), item.get("meta", {})
        if not isinstance(kind, str) or not kind.startswith("expect_"):
            problems.append(f"{where}.type: must name a GX expectation (expect_...)")
            continue
        if not isinstance(kwargs, dict) or not isinstance(meta, dict):
            problems.append(f"{where}: 'kwargs' and 'meta' must be objects")
            continue
        level = meta.get("level")
        if level not in LEVELS:
            problems.append(f"{where}.meta.level: must be 'row' or 'batch' (got {level!r})")
            continue
        spec = ExpectationSpec(type=kind, kwargs=kwargs, level=level, meta=meta)
        if level == "row" and spec.column is None:
            problems.append(f"{where}: a row-level expectation needs a column")
        specs.append(spec)
    if problems:
        raise ContractError(f"{path}: invalid suite:\n" + "\n".join(f"  {p}" for p in problems))
    assert isinstance(name, str) and isinstance(version, int)
    return Suite(
        name=name,
        version=version,
        path=path,
        description=str(data.get("description", "")),
        expectations=tuple(specs),
    )


def check_suite(suite: Suite) -> None:
    """Build every expectation in GX, so a wrong type or argument fails early (ContractError)."""
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    problems: list[str] = []
    for index, spec in enumerate(suite.expectations):
        try:
            ExpectationConfiguration(
                type=spec.type, kwargs=spec.kwargs, meta=spec.meta
            ).to_domain_obj()
        except Exception as error:  # GX raises many types here; each is a bad suite entry
            reason = str(getattr(error, "message", None) or error).strip().splitlines()[0]
            problems.append(f"expectations[{index}] ({spec.type}): {reason}")
    if problems:
        raise ContractError(
            f"{suite.path}: invalid suite:\n" + "\n".join(f"  {p}" for p in problems)
        )


def _parameters(value: Any) -> list[str]:
    if isinstance(value, dict):
        if set(value) == {"$PARAMETER"}:
            return [str(value["$PARAMETER"])]
        return [name for item in value.values() for name in _parameters(item)]
    if isinstance(value, list):
        return [name for item in value for name in _parameters(item)]
    return []


def _condition_columns(condition: Any) -> list[str]:
    if isinstance(condition, dict):
        names: list[str] = []
        column = condition.get("column")
        if isinstance(column, dict) and isinstance(column.get("name"), str):
            names.append(column["name"])
        for child in condition.get("conditions") or []:
            names.extend(_condition_columns(child))
        return names
    return []


def base_column(column: str) -> str:
    """The file column a helper column derives from (``opened_at__ts`` -> ``opened_at``)."""
    return column.split(HELPER_SEPARATOR, 1)[0]


# --------------------------------------------------------------------------- running


def run_suite(
    frame: pd.DataFrame,
    suite: Suite,
    parameters: dict[str, Any],
    *,
    gx_root: Path,
) -> ContractReport:
    """Validate ``frame`` (one row per file row, with a ``line`` column) against ``suite``.

    ``gx_root`` is the project directory of the file-backed GX context (the context itself
    lives in ``<gx_root>/gx``); Data Docs are built there for every run.
    """
    import great_expectations as gx
    from great_expectations.checkpoint.actions import UpdateDataDocsAction
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    present = set(frame.columns)
    run: list[tuple[int, ExpectationSpec]] = []
    skipped: list[str] = []
    for index, spec in enumerate(suite.expectations):
        lacking = [c for c in spec.columns if c not in present]
        unset = sorted(spec.parameters - set(parameters))
        if lacking:
            skipped.append(f"{spec.check}: column {', '.join(map(repr, lacking))} not in the file")
        elif unset:
            skipped.append(f"{spec.check}: no value for {', '.join(unset)}")
        else:
            run.append((index, spec))

    context = _context(gx_root)
    datasource = _datasource(context)
    try:
        asset = datasource.get_asset(suite.name)
    except LookupError:
        asset = datasource.add_dataframe_asset(suite.name)
    try:
        batch_definition = asset.get_batch_definition("file")
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe("file")

    expectations = []
    for index, spec in run:
        meta = {**spec.meta, "herald_index": index}
        expectations.append(
            ExpectationConfiguration(type=spec.type, kwargs=spec.kwargs, meta=meta).to_domain_obj()
        )
    gx_suite = context.suites.add_or_update(
        gx.ExpectationSuite(
            name=suite.gx_name,
            expectations=expectations,
            meta={"herald_suite_file": str(suite.path), "herald_version": suite.version},
            notes=suite.description or None,
        )
    )
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(data=batch_definition, suite=gx_suite, name=suite.gx_name)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"telemetry-{suite.name}",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update-data-docs")],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [LINE]},
        )
    )
    outcome = checkpoint.run(
        batch_parameters={"dataframe": frame}, expectation_parameters=parameters
    )

    by_index = dict(run)
    batch_failures: list[BatchFailure] = []
    row_failures: dict[int, list[RowFailure]] = {}
    data_docs: Path | None = None
    for identifier, validation in outcome.run_results.items():
        results = sorted(
            validation.results,
            key=lambda r: int((r.expectation_config.meta or {}).get("herald_index", 0)),
        )
        for result in results:
            if result.success:
                continue
            spec = by_index[int(result.expectation_config.meta["herald_index"])]
            message = _exception_message(result.exception_info)
            if message is not None:
                batch_failures.append(
                    BatchFailure(spec.check, spec.type, spec.column, f"could not run: {message}")
                )
                continue
            details = dict(result.result or {})
            if spec.level == "batch":
                batch_failures.append(_batch_failure(spec, details, parameters))
                continue
            unexpected = details.get("unexpected_index_list")
            if not isinstance(unexpected, list):
                batch_failures.append(
                    BatchFailure(
                        spec.check,
                        spec.type,
                        spec.column,
                        "a row-level expectation that does not name its rows",
                    )
                )
                continue
            column = spec.kwargs.get("column") or spec.kwargs.get("column_A")
            for item in unexpected:
                line = int(item[LINE])
                value = _plain(item.get(column)) if isinstance(column, str) else None
                row_failures.setdefault(line, []).append(RowFailure(spec.check, spec.column, value))
        data_docs = _docs_path(context, identifier)
    return ContractReport(
        suite=suite.gx_name,
        evaluated=len(run),
        skipped=skipped,
        batch_failures=batch_failures,
        row_failures=row_failures,
        data_docs=data_docs,
    )


def _exception_message(info: Any) -> str | None:
    """The error an expectation raised, if it raised one (GX nests it per metric at times)."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception") or (
        "raised_exception" not in info and info.get("exception_message")
    ):
        return str(info.get("exception_message") or "error").strip().splitlines()[0]
    for value in info.values():
        if isinstance(value, dict):
            nested = _exception_message(value)
            if nested is not None:
                return nested
    return None


def _context(gx_root: Path) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    gx_root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    bars: Any = context.variables.progress_bars  # a ProgressBarsConfig, or a dict once saved
    if isinstance(bars, ProgressBarsConfig):
        bars = {"globally": bars.globally, "metric_calculations": bars.metric_calculations}
    if not isinstance(bars, dict) or any(
        bars.get(key, True) for key in ("globally", "metric_calculations")
    ):
        # GX draws a tqdm bar on stderr for every validation: not in a log or a CLI.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    return context


def _datasource(context: Any) -> Any:
    try:
        return context.data_sources.get(DATASOURCE)
    except KeyError:
        return context.data_sources.add_pandas(DATASOURCE)


def _docs_path(context: Any, identifier: Any) -> Path | None:
    urls = context.get_docs_sites_urls(resource_identifier=identifier)
    if not urls:
        urls = context.get_docs_sites_urls()
    for site in urls:
        url = site.get("site_url")
        if url and url.startswith("file://"):
            return Path(unquote(urlparse(url).path))
    return None


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
        return parameters.get(str(value["$PARAMETER"]))
    return value


def _batch_failure(
    spec: ExpectationSpec, details: dict[str, Any], parameters: dict[str, Any]
) -> BatchFailure:
    observed = _plain(details.get("observed_value"))
    if spec.type == "expect_table_columns_to_match_set":
        wanted = [str(c) for c in spec.kwargs.get("column_set") or []]
        seen = [str(c) for c in observed or []]
        missing = tuple(c for c in wanted if c not in seen)
        found = tuple(
            c for c in seen if c not in wanted and HELPER_SEPARATOR not in c and c != LINE
        )
        if missing:
            noun = "column" if len(missing) == 1 else "columns"
            verb = "is" if len(missing) == 1 else "are"
            detail = f"{noun} {', '.join(map(repr, missing))} {verb} missing"
        else:
            detail = "the columns do not match"
        detail += f" (found {', '.join(map(repr, found))})" if found else " (no other columns)"
        return BatchFailure(
            spec.check,
            spec.type,
            ",".join(missing) or None,
            detail,
            observed=seen,
            missing=missing,
            unexpected=found,
        )
    if spec.type == "expect_table_row_count_to_be_between":
        low = _resolve(spec.kwargs.get("min_value"), parameters)
        high = _resolve(spec.kwargs.get("max_value"), parameters)
        return BatchFailure(
            spec.check,
            spec.type,
            None,
            f"{observed} rows (expected {low} to {high})",
            observed=observed,
        )
    return BatchFailure(spec.check, spec.type, spec.column, f"observed {observed!r}", observed)


def _plain(value: Any) -> Any:
    """A GX/numpy/pandas value as a plain Python value (None for a missing one)."""
    if value is None or type(value).__name__ == "NaTType":
        return None
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):  # pandas' Timestamp is one too
        convert = getattr(value, "to_pydatetime", None)
        return convert() if callable(convert) else value
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str | bytes | dict):
        with contextlib.suppress(ValueError, TypeError):
            value = item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
