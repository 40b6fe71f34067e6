"""python -m isoflop.train RUN_DIR  — train the run described by RUN_DIR/run.json.

Exit codes: 0 finished (also when diverged: result.json says so), 1 unexpected error,
2 run.json missing/invalid, 3 preempted (checkpoint written; run again to resume).
"""
from __future__ import annotations

import argparse
import json
import sys

from isoflop.train import EXIT_CONFIG, EXIT_OK, EXIT_PREEMPTED


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m isoflop.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="folder holding run.json; metrics, checkpoint and result.json go there")
    ap.add_argument("--force", action="store_true", help="train even if result.json exists")
    args = ap.parse_args(argv)

    from isoflop.train.config import ConfigError, RunConfig

    from isoflop.train import distributed, fsdp

    try:
        cfg = RunConfig.load(args.run_dir)  # fail fast, before importing torch
        world = max(distributed.wanted_tasks(), distributed.rank_env().world)
        distributed.micro_batches(cfg.batch_seqs, world, distributed.micro_seqs_setting(cfg.extra))
        fsdp.check(fsdp.sharding_setting(cfg.extra), cfg.optimizer.name, world)
    except (ConfigError, distributed.LayoutError) as e:
        print(f"isoflop.train: {e}", file=sys.stderr)
        return EXIT_CONFIG

    if distributed.should_launch():
        # ISOFLOP_TASKS_PER_RUN ranks asked for: start them (srun in an allocation, else here)
        return distributed.launch(argv if argv is not None else sys.argv[1:])

    from isoflop.train.checkpoint import Preempted
    from isoflop.train.job import train

    try:
        result = train(args.run_dir, force=args.force)
    except Preempted as e:
        print(f"isoflop.train: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    if distributed.rank_env().is_main:
        print(json.dumps({k: result.get(k) for k in ("run_id", "status", "val_loss", "steps", "wall_s")}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
