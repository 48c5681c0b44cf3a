"""Every customer reads the campaign in their own language: complete catalogs, checked by
`herald templates check`, values in the recipient's notation, the declared language the real
one, and a fallback that says which language it is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from typer.testing import CliRunner

from herald.cli import app
from herald.cli.common import ExitCode
from herald.config import HeraldConfig, load_config
from herald.delivery.messages import (
    TemplateError,
    Variant,
    all_variants,
    check_templates,
    render,
)
from herald.i18n import SOURCE_LANGUAGE, match_locale
from herald.i18n.catalogs import judge, po_file
from tests.support.environment import ROOT
from tests.support.i18n import POT, english_fragments

LANGUAGES = ["de", "fr", "es", "ja", "pt-BR"]
_PLACEHOLDER = re.compile(r"%\(\w+\)s")
PYBABEL = str(Path(sys.executable).parent / "pybabel")


@pytest.fixture(scope="module")
def config() -> HeraldConfig:
    return load_config(ROOT / "config")


def pot_messages() -> list[str]:
    with POT.open("rb") as file:
        return [m.id if isinstance(m.id, str) else m.id[0] for m in read_po(file) if m.id]


def sample(config: HeraldConfig, language: str) -> list[Variant]:
    """One variant of every kind of message (each sunset count) and every role, in a language."""
    seen: set[tuple[str, str, int | None]] = set()
    chosen = []
    for variant in all_variants(config):
        key = (variant.phase, variant.role, variant.days_left)
        if variant.locale == language and key not in seen:
            seen.add(key)
            chosen.append(variant)
    return chosen


def edit_catalog(templates: Path, language: str, msgid: str, change: str) -> None:
    """Change one entry of a catalog as a translator might, and compile it (make catalogs)."""
    path = po_file(templates, language)
    with path.open("rb") as file:
        catalog = read_po(file)
    message = catalog[msgid]
    assert message is not None, msgid
    if change == "removed":
        del catalog[msgid]
    elif change == "emptied":
        message.string = ""
    elif change == "fuzzy":
        message.flags.add("fuzzy")
    elif change == "placeholder":
        message.string = str(message.string).replace("%(legacy)s", "%(product)s")
    with path.open("wb") as file:
        write_po(file, catalog)
    with path.with_suffix(".mo").open("wb") as file:
        write_mo(file, catalog)


class TestCatalogs:
    def test_the_template_of_the_catalogs_is_what_the_templates_say(self, tmp_path: Path) -> None:
        """`make i18n-extract` was run after the templates last changed: extracting them
        again yields exactly the committed messages.pot's message ids."""
        fresh = tmp_path / "messages.pot"
        subprocess.run(
            [PYBABEL, "-q", "extract", "-F", "babel.cfg", "--omit-header", "-o", str(fresh), "."],
            cwd=ROOT,
            check=True,
        )
        with fresh.open("rb") as file:
            extracted = {m.id for m in read_po(file) if m.id}
        with POT.open("rb") as file:
            committed = {m.id for m in read_po(file) if m.id}
        assert extracted == committed
        assert len(committed) > 60

    @pytest.mark.parametrize("language", LANGUAGES)
    def test_every_catalog_translates_every_message(self, language: str) -> None:
        """Nothing missing, empty, fuzzy, or with placeholders or tags other than its source."""
        with po_file(ROOT / "templates", language).open("rb") as file:
            catalog = read_po(file)
        problems = {msgid: judge(catalog.get(msgid)) for msgid in pot_messages()}
        assert {msgid: why for msgid, why in problems.items() if why} == {}

    def test_a_locale_maps_to_the_campaign_locale_of_its_language(self) -> None:
        locales = ["en", "de", "fr", "es", "ja", "pt-BR"]
        assert match_locale("de", locales) == "de"
        assert match_locale("de-AT", locales) == "de"
        assert match_locale("pt", locales) == "pt-BR"
        assert match_locale("pt-PT", locales) == "pt-BR"
        assert match_locale("en-GB", locales) == "en"
        assert match_locale("it", locales) == "en"
        assert match_locale(None, locales) == "en"


class TestMessagesInTheirLanguage:
    @pytest.mark.parametrize("language", LANGUAGES)
    def test_every_message_is_written_in_its_language(
        self, config: HeraldConfig, language: str
    ) -> None:
        """Each kind of message, each role: declared in the language (lang), its subject not
        the English one, and no English sentence of the catalog left in its text or HTML."""
        fragments = english_fragments()
        for variant in sample(config, language):
            message = render(config, variant)
            english = render(config, Variant(**{**variant.__dict__, "locale": "en"}))
            assert message.language == language
            assert f'<html lang="{language}">' in message.html
            assert message.subject != english.subject
            left = [f for f in fragments if f in message.text or f in message.html]
            assert left == [], (variant, left)

    def test_a_german_notice_reads_its_deadline_as_a_german_date(
        self, config: HeraldConfig
    ) -> None:
        notice = render(config, Variant("sunset", "conservative", "other", "de", 7))
        assert "31. März 2028" in notice.subject
        assert "31. März 2028" in notice.text and "31. März 2028" in notice.html
        assert "March" not in notice.text + notice.subject
        assert "7 Tage" in notice.subject + notice.text

    def test_figures_keep_their_digits_in_each_notation(self, config: HeraldConfig) -> None:
        """The measured values, formatted by Babel: decimal comma, the locale's percent."""
        german = render(config, Variant("announcement", "standard", "technical", "de"))
        # Babel keeps the number and its sign together with a no-break space where the
        # language puts a space (de, fr), and writes none where it puts none (ja, en).
        assert "101,76x" in german.text and "99,7\u00a0%" in german.text
        assert "2.504\u00a0%" in german.text and "16,6\u00a0%" in german.text
        french = render(config, Variant("announcement", "standard", "technical", "fr"))
        assert "101,76x" in french.text and "99,7\u00a0%" in french.text
        japanese = render(config, Variant("announcement", "standard", "technical", "ja"))
        assert "101.76x" in japanese.text
        assert "2027年2月9日" in japanese.text
        english = render(config, Variant("announcement", "standard", "technical", "en"))
        assert "101.76x" in english.text and "99.7%" in english.text and "2,504%" in english.text

    def test_time_zones_are_named_as_the_language_names_them(self, config: HeraldConfig) -> None:
        texts = {
            language: render(config, Variant("deprecation", "standard", "other", language)).text
            for language in ("en", "de", "ja")
        }
        assert "Eastern Time" in texts["en"]
        assert "Nordamerikanische Ostküstenzeit" in texts["de"]
        assert "米国東部時間" in texts["ja"]

    def test_the_greeting_is_the_languages_own(self, config: HeraldConfig) -> None:
        """By full name where the contact has one, a polite general greeting where not."""
        german = render(config, Variant("announcement", "standard", "other", "de"))
        named = german.to(name="Anna Schmidt", email="a@b.de", account_name="Globex GmbH")
        assert "Anna Schmidt" in named.text.splitlines()[2]
        assert named.text.splitlines()[2].startswith("Guten Tag")
        nameless = german.to(name=None, email="a@b.de", account_name="Globex GmbH")
        assert nameless.text.splitlines()[2] == "Guten Tag,"
        japanese = render(config, Variant("announcement", "standard", "other", "ja"))
        greeted = japanese.to(name="山田 太郎", email="a@b.jp", account_name="X")
        assert "山田 太郎 様" in greeted.html

    def test_a_locale_without_a_catalog_is_written_in_the_default_and_says_so(
        self, config: HeraldConfig, templates_dir: Path
    ) -> None:
        """Italian is configured but has no catalog: English text, lang and language en."""
        config.campaign.locales.append("it")
        try:
            assert check_templates(config, templates_dir) == len(all_variants(config))
            italian = render(config, Variant("announcement", "standard", "other", "it"))
        finally:
            config.campaign.locales.remove("it")
        assert italian.language == SOURCE_LANGUAGE
        assert '<html lang="en">' in italian.html
        assert "generally available" in italian.text


class TestCheck:
    MSGID = "%(legacy)s retires on %(date)s"

    @pytest.mark.parametrize(
        ("language", "change", "reason"),
        [
            ("de", "removed", "missing"),
            ("fr", "emptied", "empty translation"),
            ("es", "fuzzy", "fuzzy"),
            ("pt-BR", "placeholder", "placeholders differ"),
        ],
    )
    def test_an_unusable_translation_fails_the_check_naming_it(
        self, templates_dir: Path, language: str, change: str, reason: str
    ) -> None:
        """`herald templates check` exits 2 naming the catalog, the message id, the locale."""
        edit_catalog(templates_dir, language, self.MSGID, change)
        result = CliRunner().invoke(app, ["templates", "check"])
        assert result.exit_code == ExitCode.INVALID, result.output
        error = " ".join(result.stderr.split())
        catalog = po_file(templates_dir, language)
        assert f"{catalog}: locale {language}: msgid '{self.MSGID}': {reason}" in error
        assert "Nothing was sent." in result.stderr
        # That one message of that one catalog, no other (a placeholder the template does
        # not pass also fails to render, reported as such).
        assert "catalogs do not translate what the templates say (1 problem(s))" in error

    def test_a_catalog_edited_after_it_was_compiled_fails_the_check(
        self, config: HeraldConfig, templates_dir: Path
    ) -> None:
        """A .po newer than its .mo would send yesterday's translations: named, with the
        command that compiles it."""
        po = po_file(templates_dir, "ja")
        po.touch()
        mo = po.with_suffix(".mo")
        stamp = po.stat().st_mtime_ns - 10**9
        os.utime(mo, ns=(stamp, stamp))
        with pytest.raises(TemplateError, match=r"ja/LC_MESSAGES/messages\.mo is older") as caught:
            check_templates(config, templates_dir)
        assert "make catalogs" in str(caught.value)
        assert "Nothing was sent" not in str(caught.value)  # the CLI says it once, after all
        mo.unlink()
        with pytest.raises(TemplateError, match=r"messages\.mo is missing: compile"):
            check_templates(config, templates_dir)
