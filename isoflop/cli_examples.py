"""The examples that end each command's --help: two or three real command lines, with what each
does. Plain strings only: `isoflop --help` must not import anything heavy.

tests/test_help.py parses every example against the command's real options, so an example
that names an option that does not exist (any more) fails the tests.
"""
from __future__ import annotations

# command -> [(example command line, what it does)]; the sweep names are the starter spec's
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "init": [
        ("isoflop init", "sweep.yaml from the commented starter template"),
        ("isoflop init --template cpu-demo-quick demo.yaml", "the quick demo's spec, to edit and plan"),
    ],
    "plan": [
        ("isoflop plan sweep.yaml --dry-run", "the runs per budget (N, D, steps, lr, FLOPs); nothing stored"),
        ("isoflop plan sweep.yaml", "store the sweep and its runs (their folders appear at submit)"),
        ("isoflop plan sweep.yaml --show-command 3f2a", "the exact command line of run 3f2a…"),
    ],
    "spec": [
        ("isoflop spec my-sweep", "the stored spec as YAML, with the `extend:` entries"),
        ("isoflop spec my-sweep -o sweep.yaml --overwrite", "after `isoflop extend`: the spec file to keep"),
    ],
    "spec-schema": [
        ("isoflop spec-schema > sweep.schema.json", "for your editor's YAML completion"),
        ("isoflop spec-schema | grep -A3 tokens_per_param", "what one key means"),
    ],
    "profiles": [
        ("isoflop profiles", "the shipped profiles and yours"),
        ("ISOFLOP_PROFILES=~/my-profiles isoflop profiles", "your folder first (a name there wins)"),
        ("isoflop profiles --json", "every field of every profile"),
    ],
    "submit": [
        ("isoflop submit my-sweep --profile slurm-gpu --dry-run", "jobs, sbatch script and GPU-hours; nothing submitted"),
        ("isoflop submit my-sweep --profile local --wait", "run on this machine and show progress until done"),
        ("isoflop submit my-sweep -p ./my-cluster.yaml --budget 1e19 --max-runs 4", "four runs of one budget first"),
    ],
    "status": [
        ("isoflop status my-sweep", "runs per budget and state, tok/s, ETA"),
        ("isoflop status my-sweep --watch --runs", "refresh until no run is active, every run listed"),
        ("isoflop status my-sweep --json", "for scripts: per-run state, progress, loss"),
    ],
    "cancel": [
        ("isoflop cancel my-sweep", "stop every unfinished run"),
        ("isoflop cancel my-sweep --budget 1e19 --run 3f2a", "only these runs"),
        ("isoflop cancel my-sweep --superseded", "stop the jobs of runs a replan superseded"),
    ],
    "retry": [
        ("isoflop retry my-sweep", "failed and lost runs become submittable again"),
        ("isoflop retry my-sweep --cancelled -p slurm-gpu", "after a scancel: reset and submit at once"),
        ("isoflop retry my-sweep --diverged --lr-scale 0.5", "diverged runs again at half the learning rate"),
    ],
    "fit": [
        ("isoflop fit my-sweep --predict 1e21", "the frontier, and N_opt, D_opt, L_opt at 1e21 FLOPs"),
        ("isoflop fit my-sweep --plot my-sweep.png --json > fit.json", "plots, and every number as JSON"),
        ("isoflop fit --csv runs.csv --holdout-top 1", "runs from elsewhere; backtest the largest budget"),
    ],
    "export": [
        ("isoflop export my-sweep -o runs.csv", "one row per run, every ledger column"),
        ("isoflop export my-sweep -f parquet -o runs.parquet --curves", "and the training curves"),
    ],
    "report": [
        ("isoflop report my-sweep -o report.html", "one self-contained HTML file to share"),
        ("isoflop report my-sweep -o report.html --predict 1e21 --bootstrap 200", "with a prediction, faster"),
    ],
    "extend": [
        ("isoflop extend my-sweep --dry-run", "the runs that would bracket each minimum; nothing stored"),
        ("isoflop extend my-sweep --budget 1e20", "a new budget centred on the predicted N_opt"),
    ],
    "design": [
        ("isoflop design sweep.yaml --law E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28 --noise 0.01",
         "how well the planned sweep predicts, under Chinchilla's law"),
        ("isoflop design sweep.yaml --law E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28 --noise 0.02 "
         "--target 1e22 --no-variants", "only the spec as planned, at 1e22"),
        ("isoflop design sweep.yaml --law E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28 --noise 0.01 "
         "--minimizer parabola", "the same with the parabola minimizer (fits up to 5 sizes, not through each)"),
    ],
    "compare": [
        ("isoflop compare adamw-sweep muon-sweep --predict 1e21", "compute multiplier of muon vs adamw, at 1e21"),
        ("isoflop compare base.csv new.csv --plot compare.png", "two CSV exports, with a figure"),
    ],
    "demo": [
        ("isoflop demo --quick", "plan, train, fit and plot a tiny sweep on this CPU (under 5 minutes)"),
        ("isoflop demo --compare", "the quick budgets with AdamW and with Muon, compared"),
        ("isoflop demo --spec my-small.yaml --workdir demo-out", "your own small spec the same way"),
    ],
}


def epilog(command: str) -> str | None:
    """The help epilog of one command (typer keeps its line breaks)."""
    examples = EXAMPLES.get(command)
    if not examples:
        return None
    width = max((len(cmd) for cmd, _ in examples if len(cmd) <= 72), default=0)
    lines = [f"  {cmd:<{width}}   # {what}" if len(cmd) <= 72 else f"  {cmd}\n  {'':<4}# {what}"
             for cmd, what in examples]
    return "Examples:\n\n" + "\n".join(lines)


def add_examples(app) -> None:
    """Give every registered typer command that has no epilog its examples."""
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        if info.epilog is None:
            info.epilog = epilog(name)
