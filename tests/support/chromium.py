"""Open a saved HTML file in headless Chromium and read what the browser made of it.

The page is loaded from a copy with a probe script appended (the report itself carries no
script): once the load event has fired, the probe writes onto ``<body>`` how many images
there are, how many loaded (complete, with a natural width), and how many rows the summary
table has; ``--dump-dom`` prints the DOM after that.
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


def render(chromium: str, page: Path) -> Rendered:
    """Load ``page`` (a copy beside it, so relative paths hold) and read the probe."""
    html = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        copy = page.with_name(f".probe-{page.name}")
        copy.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        try:
            done = subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",  # tests run as root in CI
                    "--disable-gpu",
                    "--no-first-run",
                    f"--user-data-dir={profile}",
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
    )
