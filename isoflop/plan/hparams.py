"""Batch size and learning rate of a run from the spec's rules."""
from __future__ import annotations

from ..errors import UserError
from ..spec import FromSweep, PowerRule, Rule

# Published rules quoted in DESIGN.md: lr, and batch size in tokens.
PRESETS: dict[str, dict[str, PowerRule]] = {
    # DeepSeek LLM (2024): eta = 0.3188 C^-0.125, B = 0.2920 C^0.3271 tokens
    "deepseek": {
        "lr": PowerRule(coef=0.3188, of="C", power=-0.125),
        "batch": PowerRule(coef=0.2920, of="C", power=0.3271),
    },
    # Porian et al. (2024): eta = 3.7 N^-0.36, B = 0.7576 N^0.703 tokens
    "porian": {
        "lr": PowerRule(coef=3.7, of="N", power=-0.36),
        "batch": PowerRule(coef=0.7576, of="N", power=0.703),
    },
}


def evaluate(rule: Rule, kind: str, *, C: float, N: float, D: float) -> float:
    """The rule's value at a run's compute C, params N and tokens D."""
    if isinstance(rule, str):
        rule = PRESETS[rule][kind]
    if isinstance(rule, (int, float)):
        return float(rule)
    if isinstance(rule, FromSweep):
        if not rule.resolved:  # the CLI resolves it from the store before planning (isoflop/laws.py)
            raise UserError(f"{kind}: {{from_sweep: {rule.from_sweep}}} is not resolved; plan it with `isoflop plan`")
        x = {"C": C, "N": N}[rule.of]
        return rule.coef * x**rule.power
    x = {"C": C, "N": N, "D": D}[rule.of]
    v = rule.coef * x**rule.power
    if rule.min is not None:
        v = max(v, rule.min)
    if rule.max is not None:
        v = min(v, rule.max)
    return v


def batch_seqs(batch_value: float, unit: str, seq_len: int) -> int:
    """Whole sequences per optimizer step (at least one)."""
    seqs = batch_value if unit == "sequences" else batch_value / seq_len
    return max(1, int(round(seqs)))
