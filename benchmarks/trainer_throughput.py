"""Training throughput of the built-in trainer vs Hugging Face transformers' LlamaForCausalLM.

Both models have the same shape (SwiGLU MLP of width Shape.d_ff, RMSNorm, rotary, no biases,
tied or untied alike), the same batch, fp32, the same thread count, and the same step:
forward + backward + gradient clipping + fused AdamW + zero_grad. Measurements alternate
between the two models in rounds, and the best round of each is reported (robust to noise
from other processes on the machine).

    .venv/bin/python benchmarks/trainer_throughput.py                 # CPU table
    .venv/bin/python benchmarks/trainer_throughput.py --threads 1 --batch 8 --seq 128
    .venv/bin/python benchmarks/trainer_throughput.py --cuda-only --peak-flops 989e12   # GPU: tok/s and MFU
    .venv/bin/python benchmarks/trainer_throughput.py --ranks 2                       # data-parallel scaling

--ranks N: the data-parallel training step (DDP over gloo on CPU, NCCL on CUDA, the trainer's own
make_train_step) with N ranks against 1, the same global batch: scaling efficiency =
tok/s(N ranks) / (N x tok/s(1 rank)). On CPU each rank has --threads threads (default 1), and
1 rank with N x threads is shown too (the fair alternative on the same cores). On CUDA it runs
over every visible GPU when there are several.

On CUDA (when available) it also measures our trainer with bf16 autocast and torch.compile at
larger sizes, and reports MFU = exact_flops_per_token x tokens/s / peak (default 989e12, H100
SXM bf16 dense).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from isoflop.plan.flops import Shape, exact_flops_per_token, params
from isoflop.train.loop import make_train_step
from isoflop.train.model import build

CPU_SHAPES = [(64, 2, 2), (128, 4, 4), (256, 4, 4), (512, 4, 8)]  # (d_model, n_layer, n_head)
CUDA_SHAPES = [(256, 4, 4), (512, 8, 8), (1024, 16, 16), (2048, 24, 16)]


def parse_shapes(s: str) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in t.split(":")) for t in s.split(",")]


def hf_model(shape: Shape):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.d_model, intermediate_size=shape.d_ff,
        num_hidden_layers=shape.n_layer, num_attention_heads=shape.n_head, num_key_value_heads=shape.n_head,
        max_position_embeddings=shape.seq_len, rms_norm_eps=1e-6, tie_word_embeddings=shape.tied,
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, use_cache=False,
    )
    cfg._attn_implementation = "sdpa"
    m = LlamaForCausalLM(cfg)
    n = sum(p.numel() for p in m.parameters())
    assert n == params(shape, "all"), (n, params(shape, "all"))  # same parameter count: same shape
    return m


def hf_step(model, opt, clip, amp):
    ps = [p for g in opt.param_groups for p in g["params"]]

    def step(xy):
        with amp():
            out = model(input_ids=xy[:, :-1], use_cache=False)
        # the same loss as ours: mean CE of the next token, logits in fp32
        loss = torch.nn.functional.cross_entropy(out.logits.float().reshape(-1, out.logits.size(-1)),
                                                 xy[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ps, clip, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def ours(shape: Shape, dev, amp, compile_=False):
    torch.manual_seed(0)
    m = build(shape).to(dev)
    opt = torch.optim.AdamW(m.param_groups(0.1), lr=1e-3, betas=(0.9, 0.95), fused=True)
    ps = [p for g in opt.param_groups for p in g["params"]]
    model = torch.compile(m) if compile_ else m
    return make_train_step(model, opt, ps, 1.0, amp)


def hf(shape: Shape, dev, amp, compile_=False):
    torch.manual_seed(0)
    m = hf_model(shape).to(dev)
    decay = [p for p in m.parameters() if p.dim() >= 2]
    rest = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), fused=True)
    return hf_step(torch.compile(m) if compile_ else m, opt, 1.0, amp)


def time_steps(step, xy, n, sync) -> float:
    sync()
    t = time.perf_counter()
    for _ in range(n):
        loss = step(xy)
    float(loss)
    sync()
    return (time.perf_counter() - t) / n


def compare(shape: Shape, batch: int, dev, amp, rounds: int, budget_s: float, sync, compile_=False) -> dict:
    """Alternate short rounds of the two steps; report tokens/s of each one's best round and the
    median over rounds of the per-round ratio (both robust to other load on the machine)."""
    xy = torch.randint(0, shape.vocab_size, (batch, shape.seq_len + 1), device=dev)
    steps = {"ours": ours(shape, dev, amp, compile_), "hf": hf(shape, dev, amp, compile_)}
    for s in steps.values():  # warm up (and compile)
        for _ in range(3):
            s(xy)
    t1 = max(time_steps(s, xy, 1, sync) for s in steps.values())
    n = max(1, int(budget_s / rounds / 2 / max(t1, 1e-6)))
    res = {k: [] for k in steps}
    for _ in range(rounds):
        for k, s in steps.items():
            res[k].append(time_steps(s, xy, n, sync))
    tok = batch * shape.seq_len
    return {k: tok / min(v) for k, v in res.items()} | {"median_ratio": statistics.median(
        a / b for a, b in zip(res["hf"], res["ours"]))}


def step_rates(threads: list[int], batch: int, seq: int, vocab: int, budget_s: float) -> None:
    """Steps/s of our training step on the demo's tiny shapes (gelu, tied), per thread count."""
    dims, layers = [32, 64, 96, 128], [1, 2, 3, 4]
    print(f"steps/s of our training step (fp32, batch {batch} x seq {seq}, vocab {vocab}, gelu, tied), best of rounds")
    for th in threads:
        torch.set_num_threads(th)
        print(f"threads={th}")
        print(f"{'d_model':>7} " + " ".join(f"{'L=' + str(L):>8}" for L in layers))
        for d in dims:
            row = []
            for L in layers:
                s = Shape(L, d, max(1, d // 32), vocab, seq)
                st = ours(s, "cpu", contextlib.nullcontext)
                xy = torch.randint(0, vocab, (batch, seq + 1))
                for _ in range(3):
                    st(xy)
                t1 = time_steps(st, xy, 2, lambda: None)
                n = max(2, int(budget_s / 5 / t1))
                row.append(1.0 / min(time_steps(st, xy, n, lambda: None) for _ in range(5)))
            print(f"{d:>7} " + " ".join(f"{r:>8.1f}" for r in row), flush=True)


def _ddp_worker(rank: int, world: int, port: int, cfg: dict, out) -> None:
    """One rank of the data-parallel step: rank 0 puts tokens/s of the global batch into `out`."""
    import os

    from torch.nn.parallel import DistributedDataParallel as DDP

    from isoflop.train.distributed import Group, RankEnv, bind_device

    dev_type = cfg["device"]
    torch.set_num_threads(cfg["threads"])
    re_ = RankEnv(rank, world, rank, "127.0.0.1", port, "bench")
    bind_device(re_, dev_type)
    g = Group(re_, dev_type)
    dev = torch.device("cuda", torch.cuda.current_device()) if dev_type == "cuda" else torch.device("cpu")
    s = Shape(*cfg["shape"])
    torch.manual_seed(0)
    m = build(s).to(dev)
    model = DDP(m, device_ids=[dev.index] if dev_type == "cuda" else None) if world > 1 else m
    if cfg["compile"]:
        model = torch.compile(model)
    opt = torch.optim.AdamW(m.param_groups(0.1), lr=1e-3, betas=(0.9, 0.95), fused=True)
    ps = [p for gr in opt.param_groups for p in gr["params"]]
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev_type == "cuda" else contextlib.nullcontext
    step = make_train_step(model, opt, ps, 1.0, amp)
    per = cfg["batch"] // world
    xy = torch.randint(0, s.vocab_size, (per, s.seq_len + 1), generator=torch.Generator().manual_seed(rank)).to(dev)
    sync = torch.cuda.synchronize if dev_type == "cuda" else (lambda: None)
    for _ in range(3):
        step(xy)
    best = float("inf")
    for _ in range(cfg["rounds"]):
        g.barrier()
        sync()
        t = time.perf_counter()
        for _ in range(cfg["steps"]):
            loss = step(xy)
        float(loss)
        sync()
        dt = torch.tensor([time.perf_counter() - t], dtype=torch.float64)
        if world > 1:  # the slowest rank sets the pace of a synchronous step
            import torch.distributed as dist

            dist.all_reduce(dt, op=dist.ReduceOp.MAX, group=g._control)
        best = min(best, float(dt))
    if rank == 0:
        out.put(cfg["batch"] * s.seq_len * cfg["steps"] / best)
        out.close()
        out.join_thread()  # the value is in the pipe before the process goes
    g.close()
    os._exit(0)  # skip interpreter teardown of gloo threads


def ddp_rate(world: int, cfg: dict) -> float:
    """Tokens/s of the global batch with `world` ranks (spawned processes)."""
    import torch.multiprocessing as mp

    from isoflop.train.distributed import _free_port

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, world, port, cfg, out)) for r in range(world)]
    for p in procs:
        p.start()
    rate = out.get(timeout=1800)
    for p in procs:
        p.join(timeout=120)
    return rate


def scaling(args, device: str, world: int, shapes: list, batch: int, seq: int, compile_: bool = False) -> None:
    threads = args.threads or 1
    print(f"\ndata-parallel step, {device}, {world} ranks vs 1, global batch {batch} x seq {seq}, vocab {args.vocab}, "
          f"{'bf16' if device == 'cuda' else 'fp32'}" + (f", {threads} thread(s) per rank" if device == "cpu" else "")
          + (", torch.compile" if compile_ else "") + "; best of rounds")
    cols = ["d_model", "n_layer", "1 rank tok/s", f"{world} ranks tok/s", "efficiency"]
    if device == "cpu":
        cols.append(f"1 rank x {world * threads} thr")
    print(" ".join(f"{c:>16}" for c in cols))
    for d, L, H in shapes:
        base = {"device": device, "threads": threads, "shape": (L, d, H, args.vocab, seq, "swiglu", not args.untied),
                "batch": batch, "steps": args.ddp_steps, "rounds": args.ddp_rounds, "compile": compile_}
        one = ddp_rate(1, base)
        many = ddp_rate(world, base)
        row = [d, L, f"{one:.0f}", f"{many:.0f}", f"{many / (world * one):.2f}"]
        if device == "cpu":
            row.append(f"{ddp_rate(1, dict(base, threads=world * threads)):.0f}")
        print(" ".join(f"{str(c):>16}" for c in row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per batch")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=8.0, help="seconds of timed steps per shape")
    ap.add_argument("--shapes", default=None, help="d:L:H,... e.g. 64:2:2,128:4:4")
    ap.add_argument("--peak-flops", type=float, default=989e12, help="peak bf16 FLOP/s for MFU (H100 SXM)")
    ap.add_argument("--cuda-only", action="store_true")
    ap.add_argument("--cuda-batch", type=int, default=16)
    ap.add_argument("--cuda-seq", type=int, default=1024)
    ap.add_argument("--step-rates", default=None, help="only print steps/s of tiny shapes for these thread counts, e.g. 1,2")
    ap.add_argument("--ranks", type=int, default=0, help="only the data-parallel scaling of N CPU ranks vs 1 "
                    "(and of every GPU, where several)")
    ap.add_argument("--ddp-steps", type=int, default=10, help="--ranks: timed steps per round")
    ap.add_argument("--ddp-rounds", type=int, default=5, help="--ranks: rounds (the best is reported)")
    args = ap.parse_args()
    if args.ranks:
        shapes = parse_shapes(args.shapes) if args.shapes else [(128, 4, 4), (256, 4, 4)]
        scaling(args, "cpu", args.ranks, shapes, args.batch, args.seq)
        if torch.cuda.is_available() and torch.cuda.device_count() > 1:
            n = torch.cuda.device_count()
            scaling(args, "cuda", n, [(1024, 16, 16), (2048, 24, 16)], args.cuda_batch * n, args.cuda_seq,
                    compile_=True)
        elif torch.cuda.is_available():
            print("\none CUDA device: no multi-GPU scaling to measure")
        return
    if args.step_rates:
        step_rates([int(t) for t in args.step_rates.split(",")], args.batch, args.seq, args.vocab, 1.0)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    parse = parse_shapes if args.shapes else None

    if not args.cuda_only:
        print(f"CPU, fp32, threads={torch.get_num_threads()}, batch {args.batch} x seq {args.seq}, "
              f"vocab {args.vocab}, {'untied' if args.untied else 'tied'}, swiglu, torch {torch.__version__}")
        print(f"{'d_model':>7} {'n_layer':>7} {'n_head':>6} {'params':>10} {'ours tok/s':>11} {'HF tok/s':>10} "
              f"{'ratio':>6} {'med.ratio':>9}")
        for d, L, H in (parse(args.shapes) if parse else CPU_SHAPES):
            s = Shape(L, d, H, args.vocab, args.seq, "swiglu", not args.untied)
            r = compare(s, args.batch, "cpu", contextlib.nullcontext, args.rounds, args.budget_s, lambda: None)
            print(f"{d:>7} {L:>7} {H:>6} {params(s, 'all'):>10} {r['ours']:>11.0f} {r['hf']:>10.0f} "
                  f"{r['ours'] / r['hf']:>6.2f} {r['median_ratio']:>9.2f}", flush=True)

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        amp = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
        sync = torch.cuda.synchronize
        print(f"\nCUDA {torch.cuda.get_device_name()}, bf16 autocast, batch {args.cuda_batch} x seq {args.cuda_seq}, "
              f"vocab {args.vocab}, peak {args.peak_flops:.3g} FLOP/s")
        print(f"{'d_model':>7} {'n_layer':>7} {'compile':>7} {'ours tok/s':>11} {'ours MFU':>8} {'HF tok/s':>10} "
              f"{'HF MFU':>7} {'ratio':>6}")
        for d, L, H in CUDA_SHAPES:
            s = Shape(L, d, H, args.vocab, args.cuda_seq, "swiglu", not args.untied)
            fpt = exact_flops_per_token(s)
            for comp in (False, True):
                try:
                    r = compare(s, args.cuda_batch, dev, amp, args.rounds, args.budget_s, sync, compile_=comp)
                except Exception as e:  # noqa: BLE001 - report and go on (OOM, compile failure)
                    print(f"{d:>7} {L:>7} {comp!s:>7} failed: {type(e).__name__}: {e}"[:200], flush=True)
                    continue
                print(f"{d:>7} {L:>7} {comp!s:>7} {r['ours']:>11.0f} {fpt * r['ours'] / args.peak_flops:>8.1%} "
                      f"{r['hf']:>10.0f} {fpt * r['hf'] / args.peak_flops:>7.1%} {r['ours'] / r['hf']:>6.2f}", flush=True)
                torch.cuda.empty_cache()
    elif args.cuda_only:
        print("no CUDA device")


if __name__ == "__main__":
    main()
