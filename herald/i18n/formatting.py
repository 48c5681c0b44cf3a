"""Values the way the recipient's language writes them (Babel, from CLDR): "9. Februar 2027",
"101,76x", "99,7 %", "Nordamerikanische Ostküstenzeit".

The figures are the measured ones from ``evidence.yaml``: only their notation changes
(every digit of the value is kept, none is rounded away or added).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from functools import cache
from typing import Any

from babel import Locale
from babel.dates import format_date, get_timezone_name
from babel.numbers import format_decimal, format_percent
from jinja2 import Undefined, pass_context
from jinja2.runtime import Context

from herald.config.evidence import Figure
from herald.i18n import SOURCE_LANGUAGE, babel_locale


def _defined(value: Any, expected: type, filter_name: str) -> None:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # name the missing variable, not a format error
    if not isinstance(value, expected):
        raise TypeError(f"{filter_name} needs a {expected.__name__}, got {type(value).__name__}")


def long_date(value: date, *, locale: Locale) -> str:
    """A day as the language writes it in running text: February 9, 2027 / 9. Februar 2027."""
    _defined(value, date, "long_date")
    return _long_date_of(value, str(locale))


@cache
def _long_date_of(value: date, locale: str) -> str:  # a campaign has a handful of dates
    return format_date(value, "long", locale=locale)


def figure(value: Figure, *, locale: Locale) -> str:
    """A measured figure with its unit: 101.76x / 101,76x, 99.7% / 99,7 %."""
    _defined(value, Figure, "figure")
    number = Decimal(str(value.value))
    if value.unit == "percent":
        return format_percent(number / 100, locale=locale, decimal_quantization=False)
    return format_decimal(number, locale=locale, decimal_quantization=False) + "x"


def zone_name(value: str, *, locale: Locale) -> str:
    """A time zone as the language names it: Eastern Time / Nordamerikanische Ostküstenzeit."""
    _defined(value, str, "zone_name")
    return str(get_timezone_name(value, "long", locale=locale))


@cache
def _locale(tag: str) -> Locale:
    return babel_locale(tag)


def _language(context: Context) -> Locale:
    """The locale of the message being rendered (its context's ``language``)."""
    return _locale(str(context.get("language") or SOURCE_LANGUAGE))


@pass_context
def _long_date(context: Context, value: date) -> str:
    return long_date(value, locale=_language(context))


@pass_context
def _figure(context: Context, value: Figure) -> str:
    return figure(value, locale=_language(context))


@pass_context
def _zone_name(context: Context, value: str) -> str:
    return zone_name(value, locale=_language(context))


# The template filters: each writes in the language of the message being rendered, so one
# environment (and one compiled copy of each template) serves every language.
FILTERS: dict[str, Callable[..., str]] = {
    "long_date": _long_date,
    "figure": _figure,
    "zone_name": _zone_name,
}
