"""Open a saved HTML file in headless Chromium and read what the browser made of it.

The page is loaded from a copy with a probe script appended (the report itself carries no
script): once the load event has fired, the probe writes onto ``<body>`` how many images
there are, how many loaded (complete, with a natural width), how many rows the summary
table has, and which addresses (``.address``) and statuses (``.status``) the browser laid out
on more than one line (the distinct tops of their text's line boxes);
``--dump-dom`` prints the DOM after that. ``width`` sets the window's width; ``screenshot``
also saves a PNG of the page at that width.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROBE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0);
  const body = document.body;
  body.setAttribute("data-probe-images", String(images.length));
  body.setAttribute("data-probe-loaded", String(loaded.length));
  body.setAttribute("data-probe-widths", loaded.map((i) => i.naturalWidth).join(","));
  body.setAttribute(
    "data-probe-summary-rows",
    String(document.querySelectorAll("#summary tbody tr").length),
  );
  // Lines an element's text is laid out on: the distinct tops of its text's line boxes.
  const lines = (element) => {
    const range = document.createRange();
    range.selectNodeContents(element);
    const tops = Array.from(range.getClientRects()).map((r) => Math.round(r.top));
    return new Set(tops).size;
  };
  const checked = Array.from(document.querySelectorAll(".address, .status"));
  const wrapped = checked.filter((e) => lines(e) > 1);
  body.setAttribute("data-probe-checked", String(checked.length));
  body.setAttribute(
    "data-probe-wrapped",
    wrapped.map((e) => e.textContent.trim().replace(/[|"&<>]/g, "")).join("|"),
  );
  body.setAttribute("data-probe-width", String(document.documentElement.clientWidth));
  body.setAttribute("data-probe-done", "yes");
});
</script>
"""


@dataclass(frozen=True)
class Rendered:
    """What Chromium reported about the page."""

    images: int
    loaded: int
    widths: list[int]
    summary_rows: int
    checked: int = 0  # addresses and statuses on the page
    wrapped: tuple[str, ...] = ()  # those laid out on more than one line
    width: int = 0  # the page's layout width


def _chromium(chromium: str, profile: str, width: int | None) -> list[str]:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    if width is not None:
        command.append(f"--window-size={width},2400")
    return command


def screenshot(chromium: str, page: Path, *, width: int, to: Path) -> Path:
    """A PNG of ``page`` at ``width`` pixels wide (the first 2400 px of its height)."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [*_chromium(chromium, profile, width), f"--screenshot={to}", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert to.exists(), f"chromium saved no screenshot (rc {done.returncode}): {done.stderr}"
    return to


def render(chromium: str, page: Path, width: int | None = None) -> Rendered:
    """Load ``page`` (a copy beside it, so relative paths hold) and read the probe."""
    html = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        copy = page.with_name(f".probe-{page.name}")
        copy.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        try:
            done = subprocess.run(
                [
                    *_chromium(chromium, profile, width),
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                    copy.as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            copy.unlink()
            shutil.rmtree(profile, ignore_errors=True)
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body is not None, (
        f"chromium printed no DOM (rc {done.returncode}): {done.stderr[-2000:]}"
    )
    attributes = dict(re.findall(r'data-probe-([a-z-]+)="([^"]*)"', body.group(0)))
    assert attributes.get("done") == "yes", f"the probe did not run: {body.group(0)}"
    return Rendered(
        images=int(attributes["images"]),
        loaded=int(attributes["loaded"]),
        widths=[int(w) for w in attributes["widths"].split(",") if w],
        summary_rows=int(attributes["summary-rows"]),
        checked=int(attributes["checked"]),
        wrapped=tuple(text for text in attributes["wrapped"].split("|") if text),
        width=int(attributes["width"]),
    )
