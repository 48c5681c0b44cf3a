"""Loading: read each YAML file, validate it against its model, then check the references
between the files. Every problem is collected before any is raised, so that one run of
``herald config check`` names them all, each with its file, line and key path."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from herald.config.campaign import CampaignConfig
from herald.config.combined import HeraldConfig, cross_check
from herald.config.evidence import EvidenceConfig
from herald.config.problems import ConfigError, ConfigProblem, KeyPath, LineMap, dotted, line_for
from herald.config.segments import SegmentsConfig
from herald.config.targets import TargetsConfig
from herald.config.telemetry import TelemetryConfig

_FILES: dict[str, type[BaseModel]] = {
    "campaign.yaml": CampaignConfig,
    "segments.yaml": SegmentsConfig,
    "evidence.yaml": EvidenceConfig,
    "targets.yaml": TargetsConfig,
    "telemetry.yaml": TelemetryConfig,
}

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as text, so pydantic reports a bad one with its key path."""


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The same with libyaml where PyYAML has it (ten times faster); a file it refuses is read
    again with :class:`_Loader`, whose message names the offending character."""


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)
_FastLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


# The last config loaded per folder, with a digest of the files it was read from: a command,
# the flow it runs and its status hook parse and validate the files once while unchanged.
_LOADED: dict[Path, tuple[bytes | None, HeraldConfig]] = {}


def _stamp(directory: Path) -> bytes | None:
    """A digest of the config files' bytes (None when one cannot be read)."""
    digest = hashlib.sha256()
    for filename in _FILES:
        try:
            digest.update(hashlib.sha256((directory / filename).read_bytes()).digest())
        except OSError:
            return None
    return digest.digest()


def load_config(directory: Path) -> HeraldConfig:
    """Load and validate every file in ``directory``; raise ConfigError naming each problem.

    A folder whose files are unchanged since the last load in this process is not read
    again."""
    stamp = _stamp(directory)
    key = directory.resolve()
    cached = _LOADED.get(key)
    if cached is not None and stamp is not None and cached[0] == stamp:
        return cached[1]
    config = _load(directory)
    _LOADED[key] = (stamp, config)
    return config


def _load(directory: Path) -> HeraldConfig:
    problems: list[ConfigProblem] = []
    models: dict[str, Any] = {}
    lines: dict[str, LineMap] = {}
    for filename, model in _FILES.items():
        path = directory / filename
        loaded = _load_file(path, model, problems)
        if loaded is not None:
            models[filename], lines[filename] = loaded
    if problems:
        raise ConfigError(problems)
    config = HeraldConfig(
        directory=directory,
        campaign=models["campaign.yaml"],
        segments=models["segments.yaml"],
        evidence=models["evidence.yaml"],
        targets=models["targets.yaml"],
        telemetry=models["telemetry.yaml"],
    )
    problems.extend(cross_check(config, lines))
    if problems:
        raise ConfigError(problems)
    return config


def _load_file(
    path: Path, model: type[M], problems: list[ConfigProblem]
) -> tuple[M, LineMap] | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        problems.append(ConfigProblem(path, "", "file not found"))
        return None
    except (OSError, UnicodeDecodeError) as error:
        problems.append(ConfigProblem(path, "", f"cannot read: {error}"))
        return None
    try:
        try:
            node = yaml.compose(text, Loader=_FastLoader)
            data = yaml.load(text, Loader=_FastLoader)
        except yaml.YAMLError:
            node = yaml.compose(text, Loader=_Loader)
            data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(error, "problem", None) or str(error)
        problems.append(ConfigProblem(path, "", f"not valid YAML: {reason}", line))
        return None
    line_map = dict(_node_lines(node, ())) if node is not None else {}
    duplicates = list(_duplicate_keys(node, ())) if node is not None else []
    for key_path, first, again in duplicates:
        problems.append(
            ConfigProblem(
                path,
                dotted(key_path),
                f"key given twice (lines {first} and {again}): YAML would keep only the last",
                again,
            )
        )
    if duplicates:
        return None
    if not isinstance(data, dict):
        problems.append(ConfigProblem(path, "", "expected a mapping of keys at the top level", 1))
        return None
    try:
        return model.model_validate(data), line_map
    except ValidationError as error:
        for item in error.errors():
            loc = tuple(part for part in item["loc"] if isinstance(part, str | int))
            problems.append(
                ConfigProblem(path, dotted(loc), _reason(item), line_for(line_map, loc))
            )
        return None


def _reason(item: Any) -> str:
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] in {"extra_forbidden"}:
        return "unknown key (check its spelling)"
    if item["type"] == "literal_error" and "input" in item:
        return f"{message} (got {item['input']!r})"
    return message


def _node_lines(node: yaml.Node, path: KeyPath) -> Iterator[tuple[KeyPath, int]]:
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            yield child, key.start_mark.line + 1
            for sub_path, line in _node_lines(value, child):
                if sub_path != child:
                    yield sub_path, line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _node_lines(item, (*path, index))


def _duplicate_keys(node: yaml.Node, path: KeyPath) -> Iterator[tuple[KeyPath, int, int]]:
    """(key path, first line, repeated line) of every key a mapping gives twice."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in seen:
                yield (*path, name), seen[name], line
            seen.setdefault(name, line)
            yield from _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, index))
