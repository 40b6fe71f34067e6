"""The training loop: AdamW, warmup + cosine/WSD schedule, clipping, evaluation, metrics,
checkpoints, divergence detection, result.json.

Files under the run folder:
  metrics.jsonl   one JSON line every `log_every` steps and at the last step: step (completed
                  steps), tokens, flops (measured FLOPs per token x tokens), train_loss (mean over
                  the steps since the previous line), lr, tokens_per_s, wall_s; val_loss when
                  evaluated. On resume, lines past the checkpoint's step are dropped.
  checkpoint.pt   see checkpoint.py; removed after the run finishes unless keep_checkpoint.
  result.json     written once at the end, atomically (tmp + fsync + os.replace): complete or absent.

Divergence: the run stops with diverged=true and diverged_step=k (k = the 1-based step whose
training loss was bad) when the loss is not finite, or exceeds 4 ln(V) at any step, or exceeds
2 ln(V) after warmup (ln V is the loss of a uniform guess: a healthy run stays well below it).
val_loss is then null. On CPU every step is checked; on CUDA only at log steps (no per-step sync).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from isoflop import atomic
from isoflop.plan import flops as plan_flops
from isoflop.train import checkpoint as ckpt
from isoflop.train import data as data_mod
from isoflop.train import distributed
from isoflop.train import fsdp
from isoflop.train.checkpoint import Preempted
from isoflop.train.config import RunConfig
from isoflop.train.flops_count import measured_flops_per_token
from isoflop.train.model import GPT, GPTConfig
from isoflop.train.trackers import open_trackers

RESULT_NAME = "result.json"
METRICS_NAME = "metrics.jsonl"
# test hooks: checkpoint every N steps / sleep after every step (seconds)
ENV_CKPT_STEPS = "ISOFLOP_CHECKPOINT_EVERY_STEPS"
ENV_STEP_SLEEP = "ISOFLOP_TEST_STEP_SLEEP"


# ---- schedule -----------------------------------------------------------------------------------
def warmup_steps(cfg: RunConfig) -> int:
    return min(cfg.steps, max(0, round(cfg.schedule.warmup_frac * cfg.steps)))


def lr_multiplier(step: int, cfg: RunConfig) -> float:
    """Factor of the peak lr used by update `step` (0-based). Reaches min_lr_frac at the last step."""
    s, n = cfg.schedule, cfg.steps
    w = warmup_steps(cfg)
    if step < w:
        return (step + 1) / w
    mn = s.min_lr_frac
    if s.kind == "cosine":
        p = (step - w + 1) / (n - w)
        return mn + (1.0 - mn) * 0.5 * (1.0 + math.cos(math.pi * p))
    # wsd: constant, then a linear decay over the last decay_frac of the steps
    d0 = max(w, n - max(1, round(s.decay_frac * n)))
    if step < d0:
        return 1.0
    return 1.0 - (1.0 - mn) * (step - d0 + 1) / (n - d0)


# ---- helpers -----------------------------------------------------------------------------------
def _clean(x: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_json_atomic(path: Path, obj: Any) -> None:
    atomic.write_json_atomic(path, _clean(obj))


def fingerprint(cfg: RunConfig) -> str:
    """Hash of what defines the training trajectory: a checkpoint or result with another is stale."""
    d = cfg.to_json()
    d["optimizer"] = cfg.optimizer.trajectory()
    if not d["shape"].get("learned_positions"):   # a rotary run keeps the fingerprint it had before the field
        d["shape"].pop("learned_positions", None)
    keys = ("shape", "model", "steps", "batch_seqs", "lr", "lr_scale", "optimizer", "schedule", "seed", "data")
    blob = json.dumps({k: d.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pick_device(cfg: RunConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.json asks for device 'cuda' but torch sees no CUDA device here")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {cfg.device!r}")
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(cfg: RunConfig, dev: torch.device) -> str:
    if cfg.dtype == "auto":
        return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if cfg.dtype not in ("bf16", "fp32"):
        raise ValueError(f"dtype must be 'auto', 'bf16' or 'fp32', not {cfg.dtype!r}")
    return cfg.dtype


def make_optimizer(model: GPT, cfg: RunConfig, dev: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused kernel where this torch has one for the device (CUDA; CPU since torch 2.4), else foreach;
    with optimizer.name muon, Muon on the hidden matrices and AdamW on the rest (optim.py)."""
    o = cfg.optimizer
    groups = model.param_groups(o.weight_decay)
    if o.name == "muon":
        from isoflop.train.optim import make_muon

        return make_muon(model, groups, cfg)
    return adamw(groups, cfg)


def adamw(groups: list[dict], cfg: RunConfig) -> torch.optim.AdamW:
    o = cfg.optimizer
    kw = dict(lr=cfg.peak_lr, betas=(o.beta1, o.beta2), eps=o.eps)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


def _truncate_metrics(path: Path, upto_step: int) -> None:
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= upto_step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from a killed process
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)


def make_train_step(model, opt: torch.optim.Optimizer, params: list[torch.Tensor], clip: float, amp,
                    accum: int = 1):
    """One optimisation step on a (B, T+1) token batch, as `accum` micro-batches whose gradients
    add up to the whole batch's; returns the detached mean loss (no sync). Under DDP only the last
    micro-batch's backward all-reduces."""
    clip_on = bool(clip and clip > 0)
    inner = getattr(model, "_orig_mod", model)  # torch.compile wraps the DDP module
    no_sync = getattr(inner, "no_sync", contextlib.nullcontext)
    if hasattr(inner, "set_requires_gradient_sync"):  # FSDP2: the root module itself is the wrapper
        no_sync = lambda: fsdp.no_sync(inner)  # noqa: E731

    def backward(xy: torch.Tensor) -> torch.Tensor:
        if accum == 1:
            with amp():
                _, loss = model(xy[:, :-1], xy[:, 1:])
            loss.backward()
            return loss.detach()
        total = None
        for i, mb in enumerate(xy.chunk(accum)):
            with no_sync() if i < accum - 1 else contextlib.nullcontext():
                with amp():
                    _, loss = model(mb[:, :-1], mb[:, 1:])
                (loss / accum).backward()
            total = loss.detach() if total is None else total + loss.detach()
        return total / accum

    def train_step(xy: torch.Tensor) -> torch.Tensor:
        loss = backward(xy)
        if clip_on:
            torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return train_step


@torch.no_grad()
def evaluate(model: GPT, batches: list[torch.Tensor], amp, group: distributed.Group | None = None,
             n_batches: int | None = None, device: torch.device | str = "cpu") -> float:
    """Mean cross-entropy (no z-loss) over the fixed held-out batches. With several ranks each
    scores its share of them (`batches`) and the sums meet in float64."""
    was = model.training
    model.eval()
    tot = torch.zeros((), dtype=torch.float64, device=batches[0].device if batches else device)
    for b in batches:
        with amp():
            logits, _ = model(b[:, :-1])
        tot += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1)).double()
    model.train(was)
    if group is not None:
        group.sum_(tot)
    return float(tot.item() / (n_batches or len(batches)))


# ---- the loop ----------------------------------------------------------------------------------
def run(cfg: RunConfig, run_dir: str | Path, group: distributed.Group | None = None) -> dict[str, Any]:
    """Train the run defined by cfg in run_dir; return the result dict (also written to result.json).

    Raises Preempted (after writing a checkpoint) when a stop was requested (see checkpoint.py).
    With a `group` of several ranks (distributed.py) the batch is split over them; rank 0 alone
    writes metrics, checkpoints and the result, and every rank returns the same result.
    """
    t_start = time.time()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    shape = cfg.shape
    T, B, V = shape.seq_len, cfg.batch_seqs, shape.vocab_size
    fp = fingerprint(cfg)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = pick_device(cfg)
    if dev.type == "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())  # the rank's own GPU (bind_device)
    group = group or distributed.Group(distributed.RankEnv(), dev.type)
    main = group.is_main
    per_rank, accum = distributed.micro_batches(B, group.world, distributed.micro_seqs_setting(cfg.extra))
    rows = (group.rank * per_rank, (group.rank + 1) * per_rank)
    dtype = pick_dtype(cfg, dev)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext

    splits = data_mod.load(cfg.data.kind, cfg.data.path, seq_len=T, vocab_size=V)

    torch.manual_seed(cfg.seed)
    mcfg = GPTConfig.from_shape(shape, z_loss=cfg.model.z_loss, mup=cfg.model.mup, mup_base_width=cfg.model.mup_base_width)
    model = GPT(mcfg).to(dev)
    model.check_counts()
    measured_fpt = measured_flops_per_token(model, T, V, dev)
    sharding = fsdp.sharding_setting(cfg.extra)
    fsdp.check(sharding, cfg.optimizer.name, group.world)
    sharded = group.active and sharding == "fsdp"
    if sharded:
        fsdp.shard(model, dev)  # before the optimizer: its parameters are the shards
    opt = make_optimizer(model, cfg, dev)

    # resume
    start_step, wall_before, resumed_from = 0, 0.0, None
    acc_sum, acc_n, last_val = 0.0, 0, None
    # sharded, the whole state stays in host memory: each rank copies only its shard to the device
    state = ckpt.load(run_dir, map_location="cpu" if sharded else dev)
    if state is not None and state.get("fingerprint") != fp:
        print(f"[isoflop.train] ignoring checkpoint of a different run definition in {run_dir}", file=sys.stderr)
        state = None
    if state is not None:
        if sharded:
            fsdp.load_full_state(model, opt, state["model"], state["optimizer"])
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        start_step = int(state["step"])
        wall_before = float(state.get("wall_s", 0.0))
        acc_sum, acc_n = float(state.get("acc_sum", 0.0)), int(state.get("acc_n", 0))
        last_val = state.get("last_val")
        resumed_from = start_step
    groups = opt.param_groups  # after load_state_dict, which replaces the group dicts
    params = [p for g in groups for p in g["params"]]
    metrics_path = run_dir / METRICS_NAME
    if main:
        _truncate_metrics(metrics_path, start_step)

    train_model = model
    if group.active and not sharded:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    compiled = bool(cfg.compile and dev.type == "cuda")
    if compiled:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    train_step = make_train_step(train_model, opt, params, cfg.optimizer.grad_clip, amp, accum)

    all_eval = data_mod.eval_batches(splits, cfg.eval.batches, cfg.eval.batch_seqs, T, cfg.eval.seed)
    # sharded, every forward is a collective: each rank scores every batch rather than a share
    eval_batches = [torch.from_numpy(b).to(dev) for b in (all_eval if sharded else all_eval[group.rank::group.world])]
    n_eval = len(all_eval)
    peak_flops = float(os.environ.get(distributed.ENV_PEAK) or 0)  # one device's; 0: MFU unknown

    ckpt_every_steps = int(os.environ.get(ENV_CKPT_STEPS, "0") or 0)
    step_sleep = float(os.environ.get(ENV_STEP_SLEEP, "0") or 0)
    check_every = 1 if dev.type == "cpu" else cfg.log_every
    log_every, steps = cfg.log_every, cfg.steps
    w_steps = warmup_steps(cfg)
    ln_v = math.log(V)
    peak = cfg.peak_lr
    pin = dev.type == "cuda"

    def state_dict(step: int) -> dict[str, Any]:
        msd, osd = fsdp.full_state(model, opt) if sharded else (model.state_dict(), opt.state_dict())
        return {"model": msd, "optimizer": osd, "step": step, "rng": ckpt.rng_state(),
                "wall_s": wall_before + (time.time() - t_start), "acc_sum": acc_sum_value(), "acc_n": acc_n,
                "last_val": last_val, "fingerprint": fp, "run_id": cfg.run_id}

    acc = torch.tensor(acc_sum, dtype=torch.float32, device=dev)

    def acc_sum_value() -> float:
        """The loss sum since the last log line, averaged over ranks (a collective when several)."""
        return float(group.mean_(acc.clone()).item()) if group.active else float(acc.item())

    def mfu(tokens_per_s: float) -> float | None:
        return measured_fpt * tokens_per_s / (peak_flops * group.world) if peak_flops > 0 else None

    def evaluate_now() -> float:
        return evaluate(model, eval_batches, amp, group if group.active and not sharded else None, n_eval, dev)

    diverged_step: int | None = None
    train_loss: float | None = None
    mf = open(metrics_path if main else os.devnull, "a")
    trackers = open_trackers(cfg, run_dir, main)  # W&B / TensorBoard when run.json names them
    t_ckpt = time.monotonic()
    t_win, tok_win = time.time(), 0
    t_loop = time.time()
    step = start_step
    try:
        for step in range(start_step, steps):
            lr = peak * lr_multiplier(step, cfg)
            for g in groups:
                g["lr"] = lr * g["lr_mult"]
            xy = torch.from_numpy(data_mod.train_rows(splits, cfg.seed, step, B, T, *rows))
            if pin:
                xy = xy.pin_memory().to(dev, non_blocking=True)
            ld = train_step(xy)
            done = step + 1
            acc += ld
            acc_n += 1
            tok_win += B * T

            if done % check_every == 0 or done == steps:
                lv = float(group.mean_(ld.clone()).item()) if group.active else float(ld.item())
                if not math.isfinite(lv) or lv > 4 * ln_v or (done > w_steps and lv > 2 * ln_v):
                    diverged_step = done
                    train_loss = lv
                    break

            if done % log_every == 0 or done == steps:
                now = time.time()
                train_loss = acc_sum_value() / max(acc_n, 1)
                tps = tok_win / max(now - t_win, 1e-9)
                rec: dict[str, Any] = {"step": done, "tokens": done * B * T, "flops": measured_fpt * done * B * T,
                                       "train_loss": train_loss, "lr": lr, "tokens_per_s": tps,
                                       "wall_s": wall_before + now - t_start}
                if peak_flops > 0:
                    rec["mfu"] = mfu(tps)
                if (cfg.eval.every and done % cfg.eval.every == 0) or done == steps:
                    last_val = evaluate_now()
                    rec["val_loss"] = last_val
                mf.write(json.dumps(_clean(rec)) + "\n")
                mf.flush()
                trackers.log(rec)
                acc.zero_()
                acc_n = 0
                t_win, tok_win = time.time(), 0
            elif cfg.eval.every and done % cfg.eval.every == 0:
                last_val = evaluate_now()
                mf.write(json.dumps(_clean({"step": done, "tokens": done * B * T, "val_loss": last_val})) + "\n")
                mf.flush()
                trackers.log({"step": done, "tokens": done * B * T, "val_loss": last_val})

            if done < steps:
                stop, signum = ckpt.stop_requested()
                due = bool((ckpt_every_steps and done % ckpt_every_steps == 0) or (
                    main and cfg.checkpoint_every_s > 0 and time.monotonic() - t_ckpt >= cfg.checkpoint_every_s))
                if group.active:  # every rank stops (and checkpoints) at the same step, or none does
                    s_all, due_i = group.max_ints([(signum or 255) if stop else 0, int(due)])
                    stop, due = s_all > 0, bool(due_i)
                    signum = s_all if 0 < s_all < 255 else signum
                if stop:
                    state = state_dict(done)
                    path = ckpt.save(run_dir, state) if main else run_dir / ckpt.CHECKPOINT_NAME
                    group.barrier()  # no rank is gone before the checkpoint is on disk
                    ckpt.clear_stop()
                    raise Preempted(done, signum, str(path))
                if due:
                    state = state_dict(done)
                    if main:
                        ckpt.save(run_dir, state)
                    t_ckpt = time.monotonic()
            if step_sleep:
                time.sleep(step_sleep)
    except BaseException:
        trackers.close(1)  # preempted or failed: the next attempt resumes the same tracker run
        raise
    finally:
        mf.close()

    diverged = diverged_step is not None
    done_steps = diverged_step if diverged else steps
    loop_s = time.time() - t_loop
    tokens_per_s = (done_steps - start_step) * B * T / loop_s if loop_s > 0 else None
    val_loss = None
    if diverged:
        with open(metrics_path if main else os.devnull, "a") as f:
            f.write(json.dumps(_clean({"step": diverged_step, "tokens": diverged_step * B * T,
                                       "train_loss": train_loss, "diverged": True})) + "\n")
    else:
        val_loss = last_val
        if val_loss is None or not math.isfinite(val_loss):
            diverged, diverged_step, val_loss = True, steps, None
    tokens = done_steps * B * T
    wall = wall_before + (time.time() - t_start)
    planned_fpt = {c: plan_flops.flops_per_token(shape, c, cfg.param_convention)  # type: ignore[arg-type]
                   for c in plan_flops.FLOP_CONVENTIONS}
    result = {
        "run_id": cfg.run_id,
        "sweep": cfg.sweep,
        "budget": cfg.budget,
        "status": "diverged" if diverged else "ok",
        "val_loss": val_loss,
        "train_loss": train_loss if train_loss is not None and math.isfinite(train_loss) else None,
        "tokens": tokens,
        "step": done_steps,  # the step val_loss is from (the last one, unless diverged)
        "steps": done_steps,
        "planned_steps": steps,
        "planned_tokens": steps * B * T,
        "measured_flops": measured_fpt * tokens,
        "measured_flops_per_token": measured_fpt,
        "planned_flops_per_token": planned_fpt,
        "flop_convention": cfg.flop_convention,
        "param_convention": cfg.param_convention,
        "params": {c: model.num_params(c) for c in plan_flops.PARAM_CONVENTIONS},
        "lr": peak,
        "wall_s": wall,
        "diverged": diverged,
        "diverged_step": diverged_step,
        "torch_version": torch.__version__,
        "device": str(dev) if dev.type == "cpu" else f"cuda:{torch.cuda.get_device_name(dev)}",
        "dtype": dtype,
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "compiled": compiled,
        "world_size": group.world,
        "sharding": "fsdp" if sharded else ("ddp" if group.active else None),
        "micro_batch_seqs": per_rank // accum,
        "accumulation_steps": accum,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu(tokens_per_s) if tokens_per_s else None,
        "resumed_from_step": resumed_from,
        "fingerprint": fp,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if main:
        write_json_atomic(run_dir / RESULT_NAME, result)
        trackers.finish(_clean(result))
        if not cfg.keep_checkpoint:
            ckpt.remove(run_dir)
    group.barrier()  # the result is on disk before any rank reports the run done
    return _clean(result)
