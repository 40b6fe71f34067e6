"""Command templates: how a run becomes a shell command line, and how its result comes back.

A command template is a small YAML file (``templates/commands/<name>.yaml`` or a user's
path; its keys are documented in README.md, "External trainers") whose ``command`` is Jinja2,
rendered once per run and attempt with the run's fields (see `template_context`). Every
``{{ ... }}`` output passes through a finalize hook that shell-quotes it (`shlex.quote`), so no
value of a spec (vars, a data path, ...) can inject a command, and no template author can
forget to quote. Constant text is not touched; ``{{ "..." | raw }}`` is for string literals only.
"""
from __future__ import annotations

import functools
import json
import math
import os
import pickle
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError, field_validator

from ..atomic import write_json_atomic
from ..errors import UserError
from ..yamlio import load_data
from ..schemas import Result, check_result, classify
from ..state import ResultKind
from .files import METRICS, RESULT, tail

from ..resources import COMMAND_TEMPLATES as TEMPLATES_DIR

CHECKPOINT_DIR = "checkpoint"  # external commands' checkpoint folder under RUN_DIR
BUILTIN_CHECKPOINT = "checkpoint.pt"  # the built-in trainer's
LOG_PREFIX = "[isoflop] "  # lines the runner itself writes into the attempt log
EXIT_PREEMPTED = 3

_STOP_SIGNALS = {"TERM", "USR1", "USR2", "INT", "HUP"}
# a command that died of (or exited 128+) one of these was stopped by a scheduler, not broken
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP)


class CommandTemplate(BaseModel):
    """A command template file, validated (README.md, "External trainers")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    command: str  # Jinja2 source
    result_regex: Optional[str] = None
    progress_regex: Optional[str] = None
    resumable: StrictBool = True
    srun: StrictBool = False
    description: str = ""
    native: StrictBool = False
    srun_args: str = ""
    stop_signal: Optional[str] = None
    cwd: Optional[str] = None
    checkpoint_glob: Optional[str] = None
    path: Optional[str] = None  # the file it was loaded from

    @field_validator("command", "cwd")
    @classmethod
    def _jinja(cls, v: Optional[str]) -> Optional[str]:
        from jinja2 import TemplateSyntaxError

        if v is not None and not v.strip():
            raise ValueError("must be a non-empty string")
        try:
            _check_raw_literals(v) if v is not None else None
        except TemplateSyntaxError as e:
            raise ValueError(f"Jinja2 syntax error at line {e.lineno}: {e.message}") from None
        return v

    @field_validator("result_regex", "progress_regex")
    @classmethod
    def _regex(cls, v: Optional[str], info: Any) -> Optional[str]:
        if v is None:
            return v
        try:
            c = re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        if info.field_name == "result_regex" and c.groups < 1:
            raise ValueError("needs a group for the loss: (?P<loss>...)")
        if info.field_name == "progress_regex" and c.groups < 2 and not (
                "step" in c.groupindex and {"loss", "train_loss", "val_loss"} & set(c.groupindex)):
            raise ValueError("needs a step group and a loss group")
        return v

    @field_validator("stop_signal", mode="before")
    @classmethod
    def _signal(cls, v: Any) -> Optional[str]:
        if v is not None and str(v).upper().removeprefix("SIG") not in _STOP_SIGNALS:
            raise ValueError(f"must be one of {', '.join(sorted(_STOP_SIGNALS))}")
        return None if v is None else str(v).upper().removeprefix("SIG")

    @field_validator("checkpoint_glob")
    @classmethod
    def _glob(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v or "/" in v or ".." in v):
            raise ValueError("must be a file name pattern such as 'ckpt.pt'")
        return v


@dataclass(frozen=True)
class Outcome:
    state: str  # "completed" | "failed" | "diverged" | "preempted"
    reason: Optional[str]
    result: Optional[dict]  # the normalized result (what RUN_DIR/result.json holds)
    exit_code: int

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "exit_code": self.exit_code}


# --------------------------------------------------------------------------- Jinja2


class _Raw(str):
    """Output of the `raw` filter: passed through unquoted by the finalize hook."""


def _quote_scalar(v: Any) -> str:
    if isinstance(v, _Raw):
        return str(v)
    if v is None:
        return "''"
    if isinstance(v, bool):
        return str(v)  # True/False: what nanoGPT's configurator (literal_eval) expects
    if isinstance(v, float):
        return shlex.quote(repr(v))
    if isinstance(v, (dict, list, tuple)):
        return shlex.quote(json.dumps(v))
    return shlex.quote(str(v))


def _finalize(v: Any) -> str:
    """Every {{ }} output: shell-quoted; a list becomes several quoted words."""
    if isinstance(v, (list, tuple)):
        return " ".join(_quote_scalar(x) for x in v)
    return _quote_scalar(v)


class TemplateError(UserError, ValueError):
    """A command template that cannot be found, read, parsed or rendered; one line naming it."""


class _TemplateFailure(Exception):
    pass


def _fail(msg: str) -> str:
    raise _TemplateFailure(msg)


def _env(quoting: bool):
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
        autoescape=False, finalize=_finalize if quoting else None,
    )
    env.filters["raw"] = lambda v: _Raw(v)
    env.filters["q"] = lambda v: _Raw(_finalize(v))  # explicit quoting (a no-op on top of finalize)
    env.globals.update(fail=_fail, is_dir=_is_dir, read_pickle=_read_pickle, divisor_near=_divisor_near)
    return env


# Helpers a template can call to check a run against its trainer's files before it is submitted
# (`plan` renders every run): a mismatch is then one line at plan time, not a failed job.


def _is_dir(path: Any) -> bool:
    return Path(os.path.expanduser(str(path))).is_dir()


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # no class, no callable: loading runs no code
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def _read_pickle(path: Any) -> Any:
    """The plain data (dicts, lists, strings, numbers) of a small pickle such as nanoGPT's
    data/<dataset>/meta.pkl; None when there is no such file."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        return None
    try:
        with open(p, "rb") as f:
            return _PlainUnpickler(f).load()
    except Exception as e:
        raise _TemplateFailure(f"{p} is not a pickle of plain data ({type(e).__name__}: {e})") from None


def _divisor_near(n: Any, target: Any) -> int:
    """The divisor of n nearest to target (by ratio; the larger on a tie): an interval that
    lands exactly on step n, as nanoGPT's final evaluation must."""
    n = int(n)
    if n < 1:
        return 1
    t = max(float(target), 1e-9)
    divisors = {d for i in range(1, math.isqrt(n) + 1) if n % i == 0 for d in (i, n // i)}
    return min(divisors, key=lambda d: (abs(math.log(d / t)), -d))


def _check_raw_literals(source: str) -> None:
    """`raw` is for the template author's constants: refuse it on anything but a string literal."""
    from jinja2 import nodes

    for f in _env(True).parse(source).find_all(nodes.Filter):
        if f.name == "raw" and not isinstance(f.node, nodes.Const):
            raise ValueError("the 'raw' filter is allowed on string literals only "
                             "(every substituted value is shell-quoted)")


# --------------------------------------------------------------------------- loading


def _template_path(name_or_path: str) -> Path:
    s = str(name_or_path).strip()
    if not s:
        raise TemplateError("command template: empty name")
    looks_like_path = "/" in s or os.sep in s or s.endswith((".yaml", ".yml")) or s.startswith(("~", "."))
    if looks_like_path:
        p = Path(s).expanduser()
        if not p.is_file():
            raise TemplateError(f"command template file {s!r} not found (from {os.getcwd()})")
        return p
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", s):
        raise TemplateError(f"command template {s!r}: not a template name or a path to a .yaml file")
    for d in template_dirs():
        p = d / f"{s}.yaml"
        if p.is_file():
            return p
    raise TemplateError(f"unknown command template {s!r} (known: {', '.join(shipped_templates()) or 'none'}; "
                     "or give a path to a .yaml file)")


def template_dirs() -> list[Path]:
    """Where template names are looked up: $ISOFLOP_COMMAND_TEMPLATES (':'-separated folders),
    then the shipped templates/commands/."""
    extra = [Path(x).expanduser() for x in os.environ.get("ISOFLOP_COMMAND_TEMPLATES", "").split(os.pathsep) if x]
    return [*extra, TEMPLATES_DIR]


def shipped_templates() -> list[str]:
    return sorted({p.stem for d in template_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    key = ".".join(map(str, err["loc"]))
    if err["type"] == "extra_forbidden":
        return f"unknown key {key!r} (known: {', '.join(sorted(CommandTemplate.model_fields))})"
    if err["type"] == "missing":  # only `command` has no default
        return f"{key!r} must be a non-empty string"
    if err["type"].startswith("bool"):
        return f"{key!r} must be true or false, got {err['input']!r}"
    return f"{key!r}: {err['msg'].removeprefix('Value error, ')}"


def load_template(name_or_path: str) -> CommandTemplate:
    """A shipped template by name or a user's template file; TemplateError (one line) when unusable."""
    p = _template_path(name_or_path)
    where = f"command template {p}"
    try:
        data = load_data(p, TemplateError, "command template")
    except TemplateError as e:
        raise TemplateError(f"command template {e}") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{where}: must be a mapping with at least a 'command' key")
    try:
        return CommandTemplate.model_validate({"name": p.stem, **data, "path": str(p)})
    except ValidationError as e:
        raise TemplateError(f"{where}: {_one_line(e)}") from None


def template_of(definition: dict) -> CommandTemplate:
    return load_template(definition.get("trainer") or "builtin")


# --------------------------------------------------------------------------- per-run paths


@dataclass(frozen=True)
class RunPaths:
    run_dir: Path
    attempt: int
    native: bool
    checkpoint_glob: Optional[str] = None

    @property
    def log(self) -> Path:
        return self.run_dir / f"attempt-{self.attempt}.log"

    @property
    def result(self) -> Path:  # what $ISOFLOP_RESULT names
        return self.run_dir / (RESULT if self.native else f"attempt-{self.attempt}.result.json")

    @property
    def script_metrics(self) -> Path:  # what $ISOFLOP_METRICS names
        return self.run_dir / (METRICS if self.native else f"attempt-{self.attempt}.metrics.jsonl")

    @property
    def metrics(self) -> Path:
        return self.run_dir / METRICS

    @property
    def normalized_result(self) -> Path:
        return self.run_dir / RESULT

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir if self.native else self.run_dir / CHECKPOINT_DIR

    def resume_from(self, resumable: bool = True) -> str:
        """The checkpoint to resume from, or "" when there is none (or the template cannot resume)."""
        if not resumable:
            return ""
        if self.native:
            p = self.run_dir / BUILTIN_CHECKPOINT
            return str(p) if p.is_file() else ""
        d = self.checkpoint_dir
        try:
            found = any(d.glob(self.checkpoint_glob)) if self.checkpoint_glob else any(d.iterdir())
            return str(d) if d.is_dir() and found else ""
        except OSError:
            return ""


def paths_for(run_dir: Path, attempt: int, template: CommandTemplate) -> RunPaths:
    return RunPaths(Path(os.path.abspath(run_dir)), int(attempt), template.native, template.checkpoint_glob)


# --------------------------------------------------------------------------- rendering


def _params(definition: dict) -> dict[str, Optional[int]]:
    try:
        from ..plan import flops

        sh = definition["shape"]
        shape = flops.Shape(**{k: sh[k] for k in ("n_layer", "d_model", "n_head", "vocab_size", "seq_len")},
                           **{k: sh[k] for k in ("mlp", "tied", "qk_norm") if k in sh},
                           learned_positions=sh.get("position_embedding") == "learned")
        conv = definition.get("param_convention") or "non_embedding"
        out: dict[str, Optional[int]] = {"params": int(flops.params(shape, conv))}
        for c in flops.PARAM_CONVENTIONS:
            out[f"params_{c}"] = int(flops.params(shape, c))
        return out
    except Exception:  # a hand-written run.json without a full shape
        return {"params": definition.get("params")}


def _tidy(x: float) -> float:
    """Drop float noise from a product (6e-05, not 5.9999999999999995e-05)."""
    return float(f"{x:.12g}")


def template_context(definition: dict, run_dir: Path, *, attempt: int = 1,
                     template: Optional[CommandTemplate] = None) -> dict[str, Any]:
    """The variables a command template sees (documented in templates/commands/README section)."""
    t = template or template_of(definition)
    paths = paths_for(run_dir, attempt, t)
    shape = dict(definition.get("shape") or {})
    opt = dict(definition.get("optimizer") or {})
    sched = dict(definition.get("schedule") or {})
    data = dict(definition.get("data") or {})
    steps = int(definition.get("steps") or 0)
    lr_scale = float(definition.get("lr_scale") or 1.0)
    lr = _tidy(float(definition.get("lr") or 0.0) * lr_scale)
    warmup_frac = float(sched.get("warmup_frac", 0.0))
    min_lr_frac = float(sched.get("min_lr_frac", 0.0))
    ctx: dict[str, Any] = {
        "python": sys.executable, "attempt": int(attempt), "shape": shape, "steps": steps,
        "run_id": definition.get("run_id", ""), "sweep": definition.get("sweep", ""), "seed": definition.get("seed", 0),
        **{k: definition.get(k) for k in ("budget", "tokens", "batch_seqs", "batch_tokens", "device", "dtype",
                                          "compile", "threads", "flop_convention", "param_convention")},
        **{k: shape.get(k) for k in ("n_layer", "n_head", "d_model", "vocab_size", "seq_len", "mlp", "tied", "qk_norm")},
        "position_embedding": shape.get("position_embedding", "rotary"),
        "head_dim": (shape["d_model"] // shape["n_head"]) if shape.get("n_head") else None,
        "lr": lr, "lr_scale": lr_scale, "base_lr": definition.get("lr"),
        "min_lr": _tidy(lr * min_lr_frac), "warmup_steps": int(round(warmup_frac * steps)),
        "schedule": sched.get("kind", "cosine"), "warmup_frac": warmup_frac, "min_lr_frac": min_lr_frac,
        "decay_frac": sched.get("decay_frac"),
        "decay_steps": int(round(float(sched.get("decay_frac") or 0.0) * steps)),
        **{k: opt.get(k) for k in ("beta1", "beta2", "weight_decay", "grad_clip")},
        # the whole optimizer setting with its name (an AdamW definition predates the name and omits it)
        "optimizer": {"name": "adamw", **opt},
        "data_kind": data.get("kind"), "data_path": data.get("path") or "",
        "run_dir": str(paths.run_dir), "checkpoint_dir": str(paths.checkpoint_dir),
        "resume_from": paths.resume_from(t.resumable), "result_path": str(paths.result),
        "metrics_path": str(paths.script_metrics), "log_path": str(paths.log),
        "vars": dict(definition.get("vars") or {}), "planned": dict(definition.get("planned") or {}),
        "definition": definition,
    }
    ctx.update(_params(definition))
    return ctx


@functools.lru_cache(maxsize=64)
def _compiled(source: str, quoting: bool):
    # compiling costs ~25 ms, rendering well under 1: `plan` renders every run of a sweep
    return _env(quoting).from_string(source)


def _render(source: str, ctx: dict, where: str, quoting: bool = True) -> str:
    from jinja2 import TemplateError as JinjaError

    try:
        return _compiled(source, quoting).render(ctx)
    except _TemplateFailure as e:
        raise TemplateError(f"{where}: {e}") from None
    except JinjaError as e:
        raise TemplateError(f"{where}: {type(e).__name__}: {e}") from None


def render_command(definition: dict, run_dir: Path, *, attempt: int = 1, srun: bool = False,
                   template: Optional[CommandTemplate] = None) -> str:
    """The shell command line of one attempt of a run (pure: reads only the template and RUN_DIR's
    checkpoint state). `srun=True` means "on Slurm": the template's `srun: true` then prefixes srun."""
    t = template or template_of(definition)
    ctx = template_context(definition, run_dir, attempt=attempt, template=t)
    cmd = _render(t.command, ctx, f"command template {t.name!r}").strip()
    if not cmd:
        raise TemplateError(f"command template {t.name!r}: renders to an empty command")
    if srun and t.srun:
        cmd = " ".join(x for x in ("srun", t.srun_args.strip(), cmd) if x)
    return cmd


def render_cwd(definition: dict, run_dir: Path, *, attempt: int = 1,
               template: Optional[CommandTemplate] = None) -> Optional[str]:
    t = template or template_of(definition)
    if not t.cwd:
        return None
    ctx = template_context(definition, run_dir, attempt=attempt, template=t)
    out = _render(t.cwd, ctx, f"command template {t.name!r} (cwd)", quoting=False).strip()
    return os.path.expanduser(out) or None


def job_environment(definition: dict, run_dir: Path, *, attempt: int = 1,
                    template: Optional[CommandTemplate] = None) -> dict[str, str]:
    """The ISOFLOP_* variables the command runs with (added to the job's environment)."""
    t = template or template_of(definition)
    paths = paths_for(run_dir, attempt, t)
    env = {
        "ISOFLOP_RUN_ID": str(definition.get("run_id", "")),
        "ISOFLOP_RUN_DIR": str(paths.run_dir),
        "ISOFLOP_ATTEMPT": str(int(attempt)),
        "ISOFLOP_RESULT": str(paths.result),
        "ISOFLOP_METRICS": str(paths.script_metrics),
        "ISOFLOP_CHECKPOINT_DIR": str(paths.checkpoint_dir),
        "PYTHONUNBUFFERED": "1",  # progress lines reach the log as they happen
    }
    threads = definition.get("threads")
    if threads:  # trainer.threads: what the local pool sized itself for; BLAS/OpenMP would take every core
        env.update({k: str(int(threads)) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    resume = paths.resume_from(t.resumable)
    if resume:
        env["ISOFLOP_RESUME_FROM"] = resume
    return env


# --------------------------------------------------------------------------- results


def _num(v: Any) -> Optional[float]:
    """A loss-like value as float (NaN/inf kept); None when absent or not a number."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def _finite_or_none(v: Optional[float]) -> Optional[float]:
    return v if v is not None and math.isfinite(v) else None


def _int_or(v: Any, default: Optional[int]) -> Optional[int]:
    """A reported count (step, tokens) as int; `default` when absent or not a finite number."""
    x = _finite_or_none(_num(v))
    return default if x is None else int(x)


def _log_lines(log_path: Path) -> Iterator[str]:
    try:
        with open(log_path, "r", errors="replace") as f:
            for line in f:
                if not line.startswith(LOG_PREFIX):
                    yield line.rstrip("\r\n")
    except FileNotFoundError:
        return


# what bash prints when its foreground command dies of a signal: "bash: line 2: 4711 Killed  python
# train.py --out_dir=..." (the whole command line); the reason names the signal already
_SHELL_JOB_STATUS = re.compile(r"^(?:\S*/)?(?:ba|da|z)?sh: (?:line \d+: )?\s*\d+ [A-Z][\w ()-]*?\s{2,}\S")


def last_log_line(log_path: Path, limit: int = 300) -> str:
    """The last non-empty line the command wrote (for a failure's reason); a \r-updated progress
    bar counts as several lines. The shell's own "Killed <command line>" report is skipped."""
    for line in reversed(tail(log_path, 10_000, 65536)):
        if not line.startswith(LOG_PREFIX) and not _SHELL_JOB_STATUS.match(line.strip()):
            return line.strip() if len(line.strip()) <= limit else line.strip()[: limit - 1] + "…"
    return ""


def _group(m: re.Match, name: str, index: Optional[int] = None) -> Optional[str]:
    if name in m.re.groupindex:
        return m.group(name)
    if index is not None and m.re.groups >= index and not m.re.groupindex:
        return m.group(index)
    return None


def parse_result_regex(regex: str, log_path: Path) -> Optional[dict[str, Any]]:
    """The last match of `regex` in the log, as {loss, train_loss?, step?, tokens?, line}."""
    rx = re.compile(regex)
    last = None
    for line in _log_lines(log_path):
        m = rx.search(line)
        if m:
            last = m
    if last is None:
        return None
    loss = _group(last, "loss", 1)
    if loss is None and "val_loss" in last.re.groupindex:
        loss = last.group("val_loss")
    out: dict[str, Any] = {"loss": _num(loss), "line": last.group(0)}
    for k in ("train_loss", "step", "tokens"):
        if k in last.re.groupindex and last.group(k) is not None:
            out[k] = _num(last.group(k))
    return out


class ProgressPump:
    """Turns a script's progress ($ISOFLOP_METRICS lines and/or `progress_regex` log lines)
    into RUN_DIR/metrics.jsonl lines in the built-in trainer's format (step, tokens, train_loss,
    val_loss). Incremental: `pump()` reads only what is new and complete. A step at or below
    the last one written is skipped (a resumed script re-emits the steps after its checkpoint)."""

    def __init__(self, definition: dict, paths: RunPaths, template: CommandTemplate):
        self.paths = paths
        self.batch_tokens = int(definition.get("batch_tokens") or 0)
        self.rx = re.compile(template.progress_regex) if template.progress_regex else None
        self.offsets = {"metrics": 0, "log": 0}
        self.last_step, self.last_keys = self._last_written()
        self.nonfinite_step: Optional[int] = None
        self.last_train_loss: Optional[float] = None
        self._mark: Optional[tuple[float, int]] = None  # (when, tokens) of the last pump that wrote

    def _last_written(self) -> tuple[int, set]:
        for line in reversed(tail(self.paths.metrics, 10_000, 65536)):
            try:
                rec = json.loads(line)
                return int(rec["step"]), set(rec)
            except (ValueError, KeyError, TypeError):
                continue
        return -1, set()

    def _new_lines(self, path: Path, key: str) -> list[str]:
        try:
            with open(path, "rb") as f:
                f.seek(self.offsets[key])
                chunk = f.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offsets[key] += end + 1
        return chunk[: end + 1].decode(errors="replace").splitlines()

    def _record(self, raw: dict[str, Any]) -> Optional[dict[str, Any]]:
        step = _num(raw.get("step"))
        if step is None or not math.isfinite(step):
            return None
        rec: dict[str, Any] = {"step": int(step)}
        tokens = _num(raw.get("tokens"))
        if tokens is not None and math.isfinite(tokens):
            rec["tokens"] = int(tokens)
        elif self.batch_tokens:
            rec["tokens"] = int(step) * self.batch_tokens
        train = _num(raw.get("train_loss", raw.get("loss")))
        val = _num(raw.get("val_loss"))
        for k, v in (("train_loss", train), ("val_loss", val)):
            if v is None:
                continue
            if not math.isfinite(v):
                if self.nonfinite_step is None:
                    self.nonfinite_step = int(step)
                rec[k] = None
                rec["diverged"] = True
            else:
                rec[k] = v
        if train is not None and math.isfinite(train):
            self.last_train_loss = train
        for k, v in raw.items():  # other numbers the script logged (lr, wall_s, ...)
            if k not in rec and k not in ("loss",) and isinstance(v, (int, float)) and not isinstance(v, bool):
                rec[k] = v if not isinstance(v, float) or math.isfinite(v) else None
        return rec

    def _rate(self, recs: list[dict[str, Any]]) -> None:
        """tokens_per_s (for status's tok/s and ETA) on the last new record, when the script gave
        none: tokens since the previous pump that wrote, over the time between the two pumps. The
        first pump of an attempt only sets the mark (it would count the script's start-up)."""
        last = next((r for r in reversed(recs) if "tokens" in r), None)
        if last is None:
            return
        now = time.time()
        if self._mark is not None and now > self._mark[0] and last["tokens"] > self._mark[1]:
            last.setdefault("tokens_per_s", round((last["tokens"] - self._mark[1]) / (now - self._mark[0]), 1))
        self._mark = (now, last["tokens"])

    def pump(self) -> int:
        recs: list[dict[str, Any]] = []
        if not self.paths.native:
            for line in self._new_lines(self.paths.script_metrics, "metrics"):
                try:
                    raw = json.loads(line)
                except ValueError:
                    continue
                if isinstance(raw, dict):
                    rec = self._record(raw)
                    if rec:
                        recs.append(rec)
        if self.rx is not None:
            for line in self._new_lines(self.paths.log, "log"):
                if line.startswith(LOG_PREFIX):
                    continue
                m = self.rx.search(line.split("\r")[-1])
                if not m:
                    continue
                gi = m.re.groupindex
                if gi:
                    raw = {k: m.group(k) for k in ("step", "loss", "train_loss", "val_loss", "tokens")
                           if k in gi and m.group(k) is not None}
                else:
                    raw = {"step": m.group(1), "train_loss": m.group(2)}
                rec = self._record(raw)
                if rec:
                    recs.append(rec)
        out = []
        for rec in recs:
            s = rec["step"]
            if s < self.last_step or (s == self.last_step and set(rec) <= self.last_keys):
                continue
            if s == self.last_step:
                self.last_keys |= set(rec)
            else:
                self.last_step, self.last_keys = s, set(rec)
            out.append(rec)
        self._rate(out)
        out = [json.dumps(rec, allow_nan=False) + "\n" for rec in out]
        if out:
            with open(self.paths.metrics, "a") as f:
                f.write("".join(out))
        return len(out)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _died_of(exit_code: int) -> Optional[int]:
    """The signal a command died of: a negative return code, or 128+N from a shell."""
    if exit_code < 0:
        return -exit_code
    if 128 < exit_code < 128 + 65:
        return exit_code - 128
    return None


def _read_script_result(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """(the JSON object the script wrote, or None; why it is unusable, or None)."""
    if not path.is_file():
        return None, None
    try:
        text = path.read_text()
        obj = json.loads(text)
    except (OSError, ValueError) as e:
        return None, f"$ISOFLOP_RESULT ({path.name}) is not valid JSON: {e}"
    if not isinstance(obj, dict):
        return None, f"$ISOFLOP_RESULT ({path.name}) must hold a JSON object, got {type(obj).__name__}"
    return obj, None


def _normalize(definition: dict, raw: dict[str, Any], *, source: str, attempt: int, exit_code: int,
               wall_s: Optional[float], template: CommandTemplate,
               pump: Optional[ProgressPump]) -> tuple[Optional[dict], Optional[str]]:
    """(normalized result, None) or (None, why the raw result is unusable)."""
    val = _num(raw.get("val_loss"))
    val = _num(raw.get("loss")) if val is None else val
    diverged = raw.get("diverged") is True
    if val is None and not diverged:
        what = "$ISOFLOP_RESULT" if source == "result_file" else "result_regex"
        return None, f"{what} gave no numeric 'loss' (got {raw.get('loss', raw.get('val_loss'))!r})"
    train = _num(raw.get("train_loss"))
    train = pump.last_train_loss if train is None and pump is not None else train
    planned_steps, batch_tokens = int(definition.get("steps") or 0), int(definition.get("batch_tokens") or 0)
    step = _int_or(raw.get("steps", raw.get("step")), planned_steps)
    stepped = _num(raw.get("steps", raw.get("step"))) is not None and batch_tokens
    tokens = _int_or(raw.get("tokens"), step * batch_tokens if stepped else int(definition.get("tokens") or step * batch_tokens))
    diverged = diverged or _finite_or_none(val) is None
    nonfinite = pump.nonfinite_step if pump is not None and pump.nonfinite_step is not None else step
    script_wall = _finite_or_none(_num(raw.get("wall_s")))
    result = {
        "run_id": definition.get("run_id"), "sweep": definition.get("sweep"), "budget": definition.get("budget"),
        "status": "diverged" if diverged else "ok", "val_loss": None if diverged else val,
        "train_loss": _finite_or_none(train), "tokens": tokens,
        "step": step, "steps": step,  # the step its loss is from: before planned_steps it is stale
        "planned_steps": planned_steps, "planned_tokens": definition.get("tokens"),
        "measured_flops": _finite_or_none(_num(raw.get("flops", raw.get("measured_flops")))),
        "lr": float(definition.get("lr") or 0.0) * float(definition.get("lr_scale") or 1.0),
        "wall_s": wall_s if script_wall is None else script_wall,
        "diverged": diverged, "diverged_step": _int_or(raw.get("diverged_step"), nonfinite) if diverged else None,
        "source": source, "trainer": template.name, "attempt": attempt, "exit_code": exit_code,
        "reported": {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in raw.items()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return Result.model_validate(result).to_json(), None


def _command_result(definition: dict, t: CommandTemplate, paths: RunPaths, log_path: Path, *, attempt: int,
                    exit_code: int, wall_s: Optional[float], pump: Optional[ProgressPump]
                    ) -> tuple[Optional[dict], Optional[str]]:
    """(the result the command left, normalized; None and why there is none that can be used)."""
    if t.native:
        check = check_result(paths.normalized_result, run_id=definition.get("run_id"),
                             planned_steps=definition.get("steps"))
        if check.kind == ResultKind.ABSENT:
            return None, f"{paths.normalized_result.name} was not written"
        if check.result is None:
            return None, f"{paths.normalized_result.name} is unusable: {check.reason}"
        return check.result.to_json(), None
    raw, problem = _read_script_result(paths.result)
    source = "result_file"
    if raw is None and problem is None and t.result_regex:
        raw, source = parse_result_regex(t.result_regex, log_path), "log_regex"
    if raw is not None:
        return _normalize(definition, raw, source=source, attempt=attempt, exit_code=exit_code,
                          wall_s=wall_s, template=t, pump=pump)
    if problem is None:
        regex = (f"result_regex {t.result_regex!r} matched nothing in {log_path.name}" if t.result_regex
                 else "the template declares no result_regex")
        problem = f"no $ISOFLOP_RESULT file ({paths.result.name}); {regex}"
    return None, problem


def collect_result(definition: dict, run_dir: Path, exit_code: int, log_path: Optional[Path] = None, *,
                   attempt: Optional[int] = None, interrupted: Optional[int] = None,
                   wall_s: Optional[float] = None, template: Optional[CommandTemplate] = None,
                   pump: Optional[ProgressPump] = None, moved_aside: Optional[str] = None) -> Outcome:
    """Classify a finished attempt and, for an external command that produced a result, write the
    normalized RUN_DIR/result.json (atomically). `interrupted` is the signal forwarded to the
    command, if any. Rules: exit 3, death by a preemption signal, or an interrupted command
    without a result -> preempted; exit 0 with a result -> completed (diverged when the loss is
    not finite or the result says so; failed when it is stale); exit 0 without a readable result
    -> failed; any other exit -> failed, with the exit code and the last log line."""
    t = template or template_of(definition)
    if attempt is None:
        m = re.fullmatch(r"attempt-(\d+)\.log", Path(log_path).name) if log_path else None
        attempt = int(m.group(1)) if m else 1
    paths = paths_for(run_dir, attempt, t)
    log_path = Path(log_path) if log_path else paths.log
    if pump is None and not t.native:
        pump = ProgressPump(definition, paths, t)
    if pump is not None:
        pump.pump()
    result, problem = _command_result(definition, t, paths, log_path, attempt=attempt, exit_code=exit_code,
                                      wall_s=wall_s, pump=pump)
    died = _died_of(exit_code)

    def preempted(why: str) -> Outcome:
        if not t.resumable:
            why += f"; template {t.name!r} cannot resume: the next attempt restarts from scratch"
        return Outcome("preempted", why, None, exit_code)

    if exit_code == EXIT_PREEMPTED:
        return preempted("exit code 3" + (f" after {_signal_name(interrupted)}" if interrupted else ""))
    if died in PREEMPT_SIGNALS or (died is not None and interrupted):
        return preempted(f"stopped by {_signal_name(died)} (exit code {exit_code})")
    if exit_code != 0 and interrupted:
        return preempted(f"interrupted by {_signal_name(interrupted)}; exit code {exit_code}")
    if exit_code != 0:
        why = f"exit code {exit_code}"
        if died is not None:
            why += f" (killed by {_signal_name(died)}{', out of memory?' if died == signal.SIGKILL else ''})"
        if result is not None and (result.get("source") == "result_file"
                                   or (result.get("step") or 0) >= int(definition.get("steps") or 0)):
            why += "; its result is not used"  # an earlier evaluation's log line is no result at all
        tail_line = last_log_line(log_path)
        return Outcome("failed", why + (f": {tail_line}" if tail_line else ""), None, exit_code)
    if result is None and interrupted:
        return preempted(f"interrupted by {_signal_name(interrupted)}; exited 0 without a result")
    if result is None:
        return Outcome("failed", f"exited 0 without a readable result: {problem}", None, exit_code)
    if not t.native:
        result.update({"moved_aside": moved_aside} if moved_aside else {})
        write_json_atomic(paths.normalized_result, result)
    check = classify(Result.model_validate(result), planned_steps=definition.get("steps"))
    if check.kind == ResultKind.STALE:  # kept in result.json for the record; sync sets it aside
        return Outcome("failed", f"{paths.normalized_result.name}: {check.reason}", result, exit_code)
    if result.get("diverged"):
        return Outcome("diverged", f"diverged at step {result.get('diverged_step')}", result, exit_code)
    return Outcome("completed", None, result, exit_code)
