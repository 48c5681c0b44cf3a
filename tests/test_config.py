"""Campaign as code: valid config loads; every mistake is named by file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from herald.config import ConfigError, load_config

ROOT_CONFIG = Path(__file__).resolve().parent.parent / "config"


def problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    return [str(problem) for problem in caught.value.problems]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


class TestShippedConfig:
    def test_the_shipped_config_is_valid(self) -> None:
        """config/ as committed loads, with the strategy document's figures and targets."""
        config = load_config(ROOT_CONFIG)
        assert config.segments.names == ["early_adopter", "standard", "conservative"]
        assert config.evidence.figures["import_speedup"].value == 101.76
        assert config.evidence.figures["import_memory_reduction"].value == 99.7
        assert config.evidence.figures["execution_speedup"].value == 16.6
        assert config.evidence.figures["average_improvement"].value == 2504
        assert config.targets.targets["migration_rate"].value == 0.70
        assert config.targets.targets["migration_rate"].within_days == 183
        assert config.targets.targets["engagement_rate"].comparison == ">"
        sunset = config.campaign.sunset
        assert sunset["conservative"] > sunset["standard"] > sunset["early_adopter"]


class TestErrors:
    def test_typo_in_a_rule_field_names_file_line_and_path(self, config_dir: Path) -> None:
        """`field: teir` fails with the segments file, its line and the rule's key path."""
        edit(
            config_dir / "segments.yaml",
            "{field: tier, equals: enterprise}",
            "{field: teir, equals: enterprise}",
        )
        [problem] = problems(config_dir)
        assert problem.startswith(f"{config_dir / 'segments.yaml'}:")
        line = int(problem.split(":")[1])
        assert "teir" in (config_dir / "segments.yaml").read_text().splitlines()[line - 1]
        assert "rules[3].when.all[0].field" in problem
        assert "(got 'teir')" in problem

    def test_impossible_date_names_its_key(self, config_dir: Path) -> None:
        """A date like 2027-02-30 is reported at phases.deprecation, not as a YAML crash."""
        edit(config_dir / "campaign.yaml", "deprecation: 2027-03-16", "deprecation: 2027-02-30")
        [problem] = problems(config_dir)
        assert "campaign.yaml:" in problem
        assert "phases.deprecation: Input should be a valid date" in problem

    def test_phases_out_of_order_are_rejected(self, config_dir: Path) -> None:
        """An announcement before the preview is an error on `phases`."""
        edit(config_dir / "campaign.yaml", "announcement: 2027-02-09", "announcement: 2027-01-02")
        [problem] = problems(config_dir)
        assert "phases: phases must run in order" in problem

    @pytest.mark.parametrize(
        ("locales", "reason"),
        [
            ("[en, de, xx]", "'xx' is not a language Babel knows"),
            ("[en, pt_BR]", "'pt_BR': write language tags like en or pt-BR"),
            ("[en, de, de]", "listed twice: de"),
        ],
    )
    def test_locales_must_be_language_tags_babel_knows(
        self, config_dir: Path, locales: str, reason: str
    ) -> None:
        edit(
            config_dir / "campaign.yaml",
            "locales: [en, de, fr, es, ja, pt-BR]",
            f"locales: {locales}",
        )
        [problem] = problems(config_dir)
        assert "locales:" in problem and reason in problem

    def test_unknown_key_is_an_error_not_ignored(self, config_dir: Path) -> None:
        """A misspelt optional key (`offset_days`) would silently use the default: refuse it."""
        edit(config_dir / "campaign.yaml", "offsets_days:", "offset_days:")
        found = problems(config_dir)
        assert any("notices.offset_days: unknown key" in p for p in found)

    def test_rule_pointing_at_unknown_segment(self, config_dir: Path) -> None:
        """A rule's segment must be declared; the message lists the valid ones."""
        edit(
            config_dir / "segments.yaml",
            "segment: conservative\n    when: {attribute: change",
            "segment: conservatve\n    when: {attribute: change",
        )
        [problem] = problems(config_dir)
        assert "rules[1].segment: unknown segment 'conservatve'" in problem
        assert "one of early_adopter, standard, conservative" in problem

    def test_segment_without_sunset_date(self, config_dir: Path) -> None:
        """Every segment needs a sunset date in campaign.yaml."""
        edit(config_dir / "campaign.yaml", "  conservative: 2028-03-31\n", "")
        [problem] = problems(config_dir)
        assert "campaign.yaml" in problem
        assert "no sunset date for segment 'conservative'" in problem

    def test_text_field_with_numeric_comparison(self, config_dir: Path) -> None:
        """`tier >= 3` makes no sense on a text column and is refused with a reason."""
        edit(
            config_dir / "segments.yaml",
            "{field: tier, equals: enterprise}",
            "{field: tier, gte: 3}",
        )
        [problem] = problems(config_dir)
        assert "field 'tier' is text" in problem

    def test_yaml_syntax_error_has_a_line(self, config_dir: Path) -> None:
        """Broken YAML is reported with its line, not a traceback."""
        (config_dir / "targets.yaml").write_text("targets:\n  migration_rate: [\n")
        [problem] = problems(config_dir)
        assert "targets.yaml:3: (top level): not valid YAML" in problem

    def test_missing_file_and_all_problems_are_reported_together(self, config_dir: Path) -> None:
        """Problems in several files come back in one error, so one fix round suffices."""
        (config_dir / "evidence.yaml").unlink()
        edit(config_dir / "targets.yaml", "value: 0.70", "value: seventy")
        found = problems(config_dir)
        assert any("evidence.yaml: (top level): file not found" in p for p in found)
        assert any("targets.migration_rate.value" in p for p in found)
