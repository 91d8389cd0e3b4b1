"""``asr ARGS`` run in the test process: the same ``asr.cli.main`` as the installed script,
without the ~4 s that a new interpreter spends importing torch. The ``asr`` script itself (entry
point, exit codes through the shell) is run as a subprocess by ``test_recipe_e2e.py``,
``test_sentences_e2e.py`` and ``test_live_e2e.py``."""
from __future__ import annotations

import io
import logging
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class CliResult:
    """What ``subprocess.run(..., capture_output=True, text=True)`` would have returned."""

    returncode: int
    stdout: str
    stderr: str


def run_asr(*args, cache: str | Path | None = None, check: bool = False) -> CliResult:
    """``asr *args``; ``cache``: the package cache (``ASR_CACHE``) for this call. Logging, torch's
    thread count and the cache are restored afterwards, so calls do not leak into each other.
    ``check``: a non-zero exit fails the test with the command's stderr."""
    from asr import package
    from asr.cli import main

    logger = logging.getLogger("asr")
    saved = (logger.handlers[:], logger.level, logger.propagate, torch.get_num_threads(), package.CACHE_DIR)
    if cache is not None:
        package.CACHE_DIR = Path(cache) / "packages"
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:               # argparse: usage errors exit 2, --help 0
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
        torch.set_num_threads(saved[3])
        package.CACHE_DIR = saved[4]
    res = CliResult(code, out.getvalue(), err.getvalue())
    assert not check or code == 0, f"asr {' '.join(map(str, args))}: exit {code}\n{res.stderr[-3000:]}"
    return res
