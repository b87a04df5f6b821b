"""What a normal run may print on stderr: our log records (INFO, or DEBUG) and the progress bar."""

from __future__ import annotations

import re

#: ``liveface.cli`` log format: ``2026-01-31 12:00:00,000 INFO liveface: ...``.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) [\w.]+: ")
#: tqdm's bar of ``liveface render`` (redrawn with carriage returns; a log record written while
#: the bar is up follows it on the same line).
PROGRESS = re.compile(r"^render: .*?(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} |$)")


def stray_lines(stderr: str, levels: tuple[str, ...] = ("INFO",)) -> list[str]:
    """Lines of ``stderr`` that are neither a log record at ``levels`` nor the progress bar."""
    bad = []
    for line in re.split(r"[\r\n]+", stderr):
        bar = PROGRESS.match(line)
        if bar is not None:
            line = line[bar.end() :]
        if not line.strip():
            continue
        m = LOG_LINE.match(line)
        if m is None or m["level"] not in levels:
            bad.append(line)
    return bad


def assert_quiet(stderr: str, levels: tuple[str, ...] = ("INFO",)) -> None:
    bad = stray_lines(stderr, levels)
    assert not bad, "unexpected stderr lines:\n" + "\n".join(bad[:20])
