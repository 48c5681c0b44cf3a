"""Messages: every variant renders from config; customer data is safe; bad templates are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from herald.cli import app
from herald.cli.common import ExitCode
from herald.config import HeraldConfig, load_config
from herald.delivery.messages import (
    TemplateError,
    Variant,
    all_variants,
    check_templates,
    recipient_values,
    render,
    substitutions,
)
from tests.support.environment import ROOT


@pytest.fixture(scope="module")
def config() -> HeraldConfig:
    return load_config(ROOT / "config")


def append_to_block(path: Path, text: str) -> None:
    """Add template code inside the file's content block, where Jinja renders it."""
    source = path.read_text()
    marker = "{% endblock %}\n"
    index = source.rindex(marker)
    path.write_text(source[:index] + text + "\n" + source[index:])


class TestRendering:
    def test_every_variant_renders(self, config: HeraldConfig) -> None:
        """Every phase x segment x role x locale renders, sunset once per notice offset too."""
        # (4 phases + 5 notice offsets of the sunset + the thank-you) x 3 segments x 3 roles
        # x 6 locales.
        assert check_templates(config, ROOT / "templates") == len(all_variants(config)) == 810

    def test_a_notice_says_how_many_days_are_left(self, config: HeraldConfig) -> None:
        """The T-30 notice counts down; the sunset-day one says it is the last day."""
        thirty = render(config, Variant("sunset", "standard", "technical", "en", 30))
        assert thirty.subject.startswith("30 days left:")
        assert "30 days left." in thirty.text and "30 days left." in thirty.html
        today = render(config, Variant("sunset", "standard", "technical", "en", 0))
        assert today.subject.startswith("Today:") and "Today is the last day." in today.text

    def test_figures_and_dates_come_from_config(self, config: HeraldConfig) -> None:
        """The evidence and the contact's own segment deadline appear as config says."""
        technical = render(config, Variant("deprecation", "conservative", "technical", "en"))
        assert "101.76x" in technical.text
        assert "Method: import time of the monolithic package" in technical.text
        assert "March 31, 2028" in technical.subject  # the conservative sunset date
        early = render(config, Variant("deprecation", "early_adopter", "technical", "en"))
        assert "June 30, 2027" in early.subject
        assert "extended compatibility" not in early.text

    def test_roles_get_different_packages(self, config: HeraldConfig) -> None:
        """Executives get the business case, technical contacts the evidence and guide."""
        executive = render(config, Variant("announcement", "standard", "executive", "en"))
        technical = render(config, Variant("announcement", "standard", "technical", "en"))
        assert "THE BUSINESS CASE" in executive.text
        assert "THE TECHNICAL EVIDENCE" not in executive.text
        assert "THE TECHNICAL EVIDENCE" in technical.text
        assert "from acme_modular.core import client" in technical.text

    def test_customer_data_is_escaped_in_html_and_raw_in_text(self, config: HeraldConfig) -> None:
        """A contact named <script> shows as text in HTML and unmangled in plain text."""
        variant = render(config, Variant("preview", "early_adopter", "executive", "en"))
        values = recipient_values(
            name="<script>alert(1)</script>", email="a@b.com", account_name="Smith & Sons"
        )
        mine = variant.personalize(values)
        assert "<script>" not in mine.html
        assert "Hello &lt;script&gt;alert(1)&lt;/script&gt;," in mine.html
        assert "Smith &amp; Sons" in mine.html
        assert "Hello <script>alert(1)</script>," in mine.text
        assert "Smith & Sons" in mine.text
        assert "-greeting_" not in mine.html + mine.text

    def test_one_render_serves_every_recipient(self, config: HeraldConfig) -> None:
        """The rendered variant carries tags, filled per recipient like SendGrid substitutions."""
        variant = render(config, Variant("sunset", "standard", "other", "en"))
        assert "-account_name_html-" in variant.html
        assert "-account_name_text-" in variant.text
        values = substitutions(recipient_values(name=None, email="x@y.z", account_name="Z"))
        assert values["-greeting_text-"] == "Hello,"


class TestCheck:
    def test_undefined_variable_is_named_with_template_and_line(
        self, config: HeraldConfig, templates_dir: Path
    ) -> None:
        """A misspelt variable fails the check, naming the file, its line and the variable."""
        path = templates_dir / "announcement" / "body.txt"
        append_to_block(path, "Deadline: {{ dedline }}")
        with pytest.raises(TemplateError) as caught:
            check_templates(config, templates_dir)
        [problem] = caught.value.problems
        line = len(path.read_text().splitlines()) - 1
        assert str(problem).startswith(f"templates/announcement/body.txt:{line}: UndefinedError")
        assert "'dedline' is undefined" in str(problem)

    def test_sandbox_escape_is_refused(self, config: HeraldConfig, templates_dir: Path) -> None:
        """Reaching for Python internals from a template is a reported error."""
        append_to_block(
            templates_dir / "preview" / "body.html",
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        )
        with pytest.raises(TemplateError, match=r"preview/body\.html:\d+"):
            check_templates(config, templates_dir)

    def test_syntax_error_is_named(self, config: HeraldConfig, templates_dir: Path) -> None:
        """An unclosed tag is reported with its file and line."""
        (templates_dir / "sunset" / "subject.txt").write_text("Retiring {% if x %}\n")
        with pytest.raises(TemplateError, match=r"sunset/subject\.txt:1: syntax error"):
            check_templates(config, templates_dir)

    def test_a_variant_file_overrides_the_default(
        self, config: HeraldConfig, templates_dir: Path
    ) -> None:
        """A file under <phase>/<segment>/<role>/ is used for that variant only."""
        folder = templates_dir / "preview" / "early_adopter" / "executive"
        folder.mkdir(parents=True)
        (folder / "subject.de.txt").write_text("Vorschau: {{ products.new }}\n")
        german = render(
            config, Variant("preview", "early_adopter", "executive", "de"), templates_dir
        )
        english = render(
            config, Variant("preview", "early_adopter", "executive", "en"), templates_dir
        )
        assert german.subject == "Vorschau: Acme Platform Modular"
        assert english.subject.startswith("Early access")

    def test_cli_check_exits_2_on_a_broken_template(self, templates_dir: Path) -> None:
        """`herald templates check` exits 2 and names the template and the variable."""
        append_to_block(templates_dir / "deprecation" / "body.html", "{{ recipient.nickname }}")
        result = CliRunner().invoke(app, ["templates", "check"])
        assert result.exit_code == ExitCode.INVALID
        assert "templates/deprecation/body.html:" in result.stderr
        assert "nickname" in result.stderr

    def test_cli_check_passes_on_the_shipped_templates(self) -> None:
        """`herald templates check` exits 0 on templates/ as committed."""
        result = CliRunner().invoke(app, ["templates", "check"])
        assert result.exit_code == 0, result.stderr
        assert "810 variants" in result.output
