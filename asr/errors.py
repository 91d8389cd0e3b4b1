"""Typed errors and problem reports shared by every layer.

Domain errors derive from :class:`AsrError`; the CLI turns one into a single line naming the
file/item and exits 2, while any other exception (a bug) keeps its traceback. A
:class:`Problem` is an item that was skipped or changed but did not stop the run: it is
counted, logged and listed in a report file, never silently dropped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

log = logging.getLogger(__name__)


class AsrError(Exception):
    """Base of every error caused by input, configuration or environment (not by a bug)."""


class MissingFileError(AsrError, FileNotFoundError):
    """A needed file (model, LM, lexicon, tool) does not exist; the message says how to make it."""


ProblemKind = Literal["skipped", "mapped"]


@dataclass(frozen=True)
class Problem:
    """One item (utterance, file, job) that was left out (``skipped``) or changed (``mapped``)."""

    id: str
    reason: str
    kind: ProblemKind = "skipped"

    def __str__(self) -> str:
        return f"{self.id}\t{self.reason}"


def report_problems(problems: Sequence[Problem], total: int, what: str, report: Path | None) -> None:
    """Log how many of ``total`` items were skipped / changed and list them all in ``report``
    (one ``id<TAB>reason`` line each), or in the log when there is no report file."""
    if not problems:
        return
    mapped = sum(p.kind == "mapped" for p in problems)
    log.warning("%s: %d of %d items skipped, %d mapped (see %s)", what, len(problems) - mapped, total,
                mapped, report or "below")
    lines = "\n".join(map(str, problems))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(lines + "\n", encoding="utf-8")
    else:
        log.warning("%s", lines)
