"""The whole configuration, and the references between its files that no single file's model
can check (a segment named in ``campaign.yaml`` must exist in ``segments.yaml``, and so on)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from herald.config.campaign import CampaignConfig
from herald.config.evidence import EvidenceConfig
from herald.config.problems import ConfigProblem, KeyPath, LineMap, dotted, line_for
from herald.config.segments import SegmentsConfig
from herald.config.targets import TargetsConfig
from herald.config.telemetry import TelemetryConfig


@dataclass(frozen=True)
class HeraldConfig:
    """Every config file, validated and cross-checked."""

    directory: Path
    campaign: CampaignConfig
    segments: SegmentsConfig
    evidence: EvidenceConfig
    targets: TargetsConfig
    telemetry: TelemetryConfig


def cross_check(config: HeraldConfig, lines: dict[str, LineMap]) -> Iterator[ConfigProblem]:
    """What is wrong between the files (each problem with its file, line and key path)."""
    directory = config.directory

    def problem(filename: str, loc: KeyPath, reason: str) -> ConfigProblem:
        return ConfigProblem(
            directory / filename, dotted(loc), reason, line_for(lines[filename], loc)
        )

    segments = config.segments
    names = segments.names
    if len(set(names)) != len(names):
        yield problem("segments.yaml", ("segments",), "segment names must be unique")
    if segments.default not in names:
        yield problem(
            "segments.yaml", ("default",), f"unknown segment {segments.default!r} ({_of(names)})"
        )
    for index, rule in enumerate(segments.rules):
        if rule.segment not in names:
            yield problem(
                "segments.yaml",
                ("rules", index, "segment"),
                f"unknown segment {rule.segment!r} ({_of(names)})",
            )
    rule_names = [rule.name for rule in segments.rules]
    if len(set(rule_names)) != len(rule_names):
        yield problem("segments.yaml", ("rules",), "rule names must be unique")
    levels = [level.name for level in segments.readiness.levels]
    if segments.readiness.default not in levels:
        yield problem(
            "segments.yaml",
            ("readiness", "default"),
            f"unknown readiness level {segments.readiness.default!r} ({_of(levels)})",
        )
    for index, readiness_rule in enumerate(segments.readiness.rules):
        if readiness_rule.level not in levels:
            yield problem(
                "segments.yaml",
                ("readiness", "rules", index, "level"),
                f"unknown readiness level {readiness_rule.level!r} ({_of(levels)})",
            )

    campaign = config.campaign
    for phase, audience in campaign.audiences.items():
        for index, segment in enumerate(audience.segments):
            if segment not in names:
                yield problem(
                    "campaign.yaml",
                    ("audiences", phase, "segments", index),
                    f"unknown segment {segment!r} ({_of(names)})",
                )
    for name in names:
        if name not in campaign.sunset:
            yield problem("campaign.yaml", ("sunset",), f"no sunset date for segment {name!r}")
    for name, day in campaign.sunset.items():
        if name not in names:
            yield problem(
                "campaign.yaml", ("sunset", name), f"unknown segment {name!r} ({_of(names)})"
            )
        elif day <= campaign.phases.deprecation:
            yield problem(
                "campaign.yaml",
                ("sunset", name),
                f"sunset {day} must come after the deprecation phase "
                f"({campaign.phases.deprecation})",
            )


def _of(names: list[str]) -> str:
    return "one of " + ", ".join(names)
