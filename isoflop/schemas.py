"""The two files a run folder's job is given and leaves: `run.json` and `result.json`.

Defined once, here: the planner/submit writes `RunFile`, the runner and the trainer read it;
the trainer (built-in or a template's normalised result) writes `Result`, the job and
ingestion read it through `check_result`, which also says whether a result counts. Only
pydantic is imported; `isoflop status` imports this module only once it finds a file to read.

Both models keep unknown keys (`extra="allow"`): a trainer may record more (device, versions,
what a script reported) and a newer run.json may carry more fields than an older job knows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .state import ABSENT, ResultCheck, ResultKind

RUN_JSON = "run.json"
RESULT_JSON = "result.json"


class RunFile(BaseModel):
    """`run.json`: a run's definition (the planner's, hashed into its run id) plus what the
    dispatcher adds per attempt. Typed here are the fields dispatch and ingestion rely on."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    sweep: Optional[str] = None
    attempt: int = 1
    lr_scale: float = 1.0
    trainer: str = "builtin"
    steps: int
    tokens: Optional[int] = None
    batch_tokens: Optional[int] = None
    lr: float
    planned: dict[str, Any] = {}

    @classmethod
    def of_run(cls, run: Any, sweep: str, attempt: int, lr_scale: float) -> "RunFile":
        """run.json of one attempt of a stored run (a store Run row, or anything with its columns)."""
        return cls(**{
            **run.definition, "run_id": run.run_id, "sweep": sweep, "attempt": attempt, "lr_scale": lr_scale,
            "planned": {k: getattr(run, k) for k in ("flops", "flops_6nd", "flops_6nd_attention", "flops_exact",
                                                     "params_non_embedding", "params_with_output", "params_all")},
        })

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """A run folder's run.json, checked against `RunFile` (as written: extra keys kept); a
    ValueError of one line naming the file and the field when it is missing or unusable."""
    p = Path(run_dir) / RUN_JSON
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"{p}: not found (the dispatcher writes it before the job starts)") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: unreadable: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: must hold a JSON object")
    try:
        RunFile.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"{p}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return obj


class Result(BaseModel):
    """`result.json`: the final outcome of a run's training. `step` is the step its loss comes
    from; a loss from before `planned_steps` is stale (an evaluation that did not happen at the
    end), never a final result."""

    model_config = ConfigDict(extra="allow")

    run_id: Optional[str] = None
    sweep: Optional[str] = None
    status: Literal["ok", "diverged"] = "ok"
    val_loss: Optional[float] = None
    train_loss: Optional[float] = None
    step: Optional[int] = None
    steps: Optional[int] = None  # steps trained (older results have only this: `step` defaults to it)
    planned_steps: Optional[int] = None
    tokens: Optional[int] = None
    planned_tokens: Optional[int] = None
    measured_flops: Optional[float] = None
    wall_s: Optional[float] = None
    diverged: bool = False
    diverged_step: Optional[int] = None

    @field_validator("val_loss", "train_loss", mode="before")
    @classmethod
    def _loss_is_a_number(cls, v: Any) -> Any:
        if isinstance(v, bool):  # pydantic would read true as 1.0: a loss of 1.0 nobody measured
            raise ValueError("a loss must be a number, not a boolean")
        return v

    @model_validator(mode="after")
    def _step_from_steps(self) -> "Result":
        if self.step is None:
            self.step = self.steps
        return self

    @property
    def is_diverged(self) -> bool:
        return self.diverged or self.status == "diverged" or (self.val_loss is not None and not _finite(self.val_loss))

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _finite(v: Optional[float]) -> bool:
    return v is not None and math.isfinite(v)


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "result"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {err['msg']} (got {err.get('input')!r}){more}"


def classify(result: Result, *, run_id: Optional[str] = None, planned_steps: Optional[int] = None) -> ResultCheck:
    """Whether a parsed result counts: valid, diverged, stale or invalid (with the reason)."""
    if run_id and result.run_id not in (None, run_id):
        return ResultCheck(ResultKind.INVALID, None, f"it belongs to run {result.run_id!r}, not {run_id!r}")
    if result.is_diverged:
        at = result.diverged_step if result.diverged_step is not None else result.step
        where = f"diverged at step {at}" if at is not None else "diverged"
        loss = "" if result.val_loss is None or _finite(result.val_loss) else f" (val_loss {result.val_loss})"
        return ResultCheck(ResultKind.DIVERGED, result, where + loss)
    if result.val_loss is None:
        return ResultCheck(ResultKind.INVALID, None, "it has no val_loss")
    if result.val_loss <= 0:  # a cross-entropy is positive; the fits take its logarithm
        return ResultCheck(ResultKind.INVALID, None, f"val_loss {result.val_loss} is not a positive loss")
    planned = planned_steps or result.planned_steps
    if planned and result.step is not None and result.step < planned:
        return ResultCheck(ResultKind.STALE, result,
                           f"its loss is from step {result.step} of {planned} planned (a stale evaluation: "
                           "the trainer must evaluate at the last step)")
    return ResultCheck(ResultKind.VALID, result, None)


def parse_result(data: Any, *, run_id: Optional[str] = None, planned_steps: Optional[int] = None) -> ResultCheck:
    if not isinstance(data, dict):
        return ResultCheck(ResultKind.INVALID, None, f"it holds a JSON {type(data).__name__}, not an object")
    try:
        result = Result.model_validate(data)
    except ValidationError as e:
        return ResultCheck(ResultKind.INVALID, None, _one_line(e))
    return classify(result, run_id=run_id, planned_steps=planned_steps)


def check_result(path: Path, *, run_id: Optional[str] = None, planned_steps: Optional[int] = None) -> ResultCheck:
    """Read and judge a result.json: absent, valid, diverged, stale, or invalid with the reason."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return ABSENT
    except (OSError, UnicodeDecodeError) as e:
        return ResultCheck(ResultKind.INVALID, None, f"unreadable: {e}")
    try:
        data = json.loads(text)  # Python's json reads NaN/Infinity: non-finite losses stay visible
    except ValueError as e:
        return ResultCheck(ResultKind.INVALID, None, f"not valid JSON ({e}; {len(text)} bytes, truncated?)")
    return parse_result(data, run_id=run_id, planned_steps=planned_steps)


def set_aside_result(rdir: Path, attempt: int, reason: str) -> Optional[Path]:
    """Move a result.json that does not count out of the way (never delete it), so the run can be
    trained again; the reason goes beside it. Returns the new path (None: nothing to move)."""
    src = Path(rdir) / RESULT_JSON
    dest = Path(rdir) / f"result.rejected-{attempt}.json"
    i = 1
    while dest.exists():
        i += 1
        dest = Path(rdir) / f"result.rejected-{attempt}.{i}.json"
    try:
        src.replace(dest)
    except FileNotFoundError:
        return None
    dest.with_suffix(".reason").write_text(reason + "\n")
    return dest
