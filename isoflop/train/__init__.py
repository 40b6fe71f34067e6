"""Built-in trainer: a small decoder-only GPT, its data, the training loop and checkpoints.

Importing this package is cheap (no torch): the login node may import the name.
Entry points:

    python -m isoflop.train RUN_DIR          # reads RUN_DIR/run.json, trains, writes result.json
    isoflop.train.job.train(run_dir) -> dict # the library call a submitit job wraps

Exit codes of the module entry point are in `EXIT_CODES`.
"""
from __future__ import annotations

EXIT_OK = 0  # trained to the end, or diverged (result.json records which)
EXIT_ERROR = 1  # an unexpected error (traceback on stderr)
EXIT_CONFIG = 2  # run.json missing or invalid
EXIT_PREEMPTED = 3  # a signal asked us to stop: checkpoint written, requeue to resume

EXIT_CODES = {"ok": EXIT_OK, "error": EXIT_ERROR, "config": EXIT_CONFIG, "preempted": EXIT_PREEMPTED}

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_CONFIG", "EXIT_PREEMPTED", "EXIT_CODES"]
