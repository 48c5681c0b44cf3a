"""What is wrong with a config: each problem with its file, line and key path.

Every module of :mod:`herald.config` reports through these, so that ``herald config check``
prints one greppable ``file:line: key.path: reason`` line per problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from herald.errors import HeraldError

# A key path inside one file ("audiences", "preview", "segments", 0) and the line it starts on.
KeyPath = tuple[str | int, ...]
LineMap = dict[KeyPath, int]


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in one config file."""

    file: Path
    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.path or '(top level)'}: {self.reason}"


class ConfigError(HeraldError):
    """The configuration is invalid; nothing may run until every problem is fixed."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


def dotted(loc: KeyPath) -> str:
    """A key path as the messages print it: ``audiences.preview.segments[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def line_for(line_map: LineMap, loc: KeyPath) -> int | None:
    """The line of ``loc``, or of its nearest parent the file gives (None: not in the file)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in line_map:
            return line_map[loc[:end]]
    return None
