"""A stand-in for nanoGPT's train.py, to run the shipped `nanogpt` command template for real.

It keeps what the template relies on: nanoGPT's globals-as-config with its configurator's
`--key=value` rules (the key must exist, literal_eval'd, and of the default's type), the
loop's structure (evaluate at iter % eval_interval == 0 before the step, save out_dir/ckpt.pt
there when iter > 0, train iterations 0..max_iters), and its two log lines (and a "threads: OMP_NUM_THREADS=..." line):
    step N: train loss X, val loss Y
    iter N: loss X, time Tms, mfu -100.00%
The model is a numpy logistic regression (deterministic per iteration), not a GPT.
"""
import os
import pickle
import sys
import time
from ast import literal_eval

import numpy as np

# -----------------------------------------------------------------------------
# nanoGPT's defaults (the keys the shipped template sets, plus a few)
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200
eval_only = False
always_save_checkpoint = True
init_from = 'scratch'
wandb_log = False
dataset = 'openwebtext'
gradient_accumulation_steps = 5 * 8
batch_size = 12
block_size = 1024
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False
learning_rate = 6e-4
max_iters = 600000
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 2000
lr_decay_iters = 600000
min_lr = 6e-5
backend = 'nccl'
device = 'cuda'
dtype = 'bfloat16'
compile = True
# -----------------------------------------------------------------------------
# nanoGPT's configurator.py, verbatim in behaviour
for arg in sys.argv[1:]:
    if '=' not in arg:
        assert not arg.startswith('--')
        exec(open(arg).read())
    else:
        assert arg.startswith('--')
        key, val = arg.split('=', 1)
        key = key[2:]
        if key in globals():
            try:
                attempt = literal_eval(val)
            except (SyntaxError, ValueError):
                attempt = val
            assert type(attempt) == type(globals()[key]), f"{key}: {type(attempt)} != {type(globals()[key])}"
            print(f"Overriding: {key} = {attempt}")
            globals()[key] = attempt
        else:
            raise ValueError(f"Unknown config key: {key}")
# -----------------------------------------------------------------------------

if 'cuda' in device:  # as nanoGPT does: a CUDA device on a machine without one fails here
    import torch
    torch.zeros(1, device=device)
print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
os.makedirs(out_dir, exist_ok=True)
assert os.path.isdir(os.path.join('data', dataset)), f"no data/{dataset} in {os.getcwd()}"
rng = np.random.default_rng(1337)
dim = n_embd
w_true = rng.normal(size=dim)
X = rng.normal(size=(2048, dim))
Y = (rng.random(2048) < 1 / (1 + np.exp(-X @ w_true))).astype(np.float64)


def loss_grad(w, x, y):
    z = x @ w
    return float(np.mean(np.logaddexp(0.0, z) - y * z)), x.T @ (1 / (1 + np.exp(-z)) - y) / len(y)


if init_from == 'scratch':
    w, m, iter_num = np.zeros(dim), np.zeros(dim), 0
elif init_from == 'resume':
    with open(os.path.join(out_dir, 'ckpt.pt'), 'rb') as f:
        ck = pickle.load(f)
    w, m, iter_num = ck['w'], ck['m'], ck['iter_num']


def get_lr(it):
    if it < warmup_iters:
        return learning_rate * it / warmup_iters
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + np.cos(np.pi * ratio)) * (learning_rate - min_lr)


while True:
    lr = get_lr(iter_num) if decay_lr else learning_rate
    if iter_num % eval_interval == 0:
        tr, _ = loss_grad(w, X[:1024], Y[:1024])
        va, _ = loss_grad(w, X[1024:], Y[1024:])
        print(f"step {iter_num}: train loss {tr:.4f}, val loss {va:.4f}", flush=True)
        if iter_num > 0 and always_save_checkpoint:
            with open(os.path.join(out_dir, 'ckpt.pt'), 'wb') as f:
                pickle.dump({'w': w, 'm': m, 'iter_num': iter_num}, f)
    idx = np.random.default_rng(iter_num).integers(0, 1024, size=batch_size * gradient_accumulation_steps)
    lossf, g = loss_grad(w, X[idx], Y[idx])
    m = beta1 * m + (1 - beta1) * g
    w = w - lr * m
    if iter_num % log_interval == 0:
        print(f"iter {iter_num}: loss {lossf:.4f}, time 1.00ms, mfu -100.00%", flush=True)
    iter_num += 1
    time.sleep(float(os.environ.get("NANOGPT_LIKE_SLEEP", "0")))
    if iter_num > max_iters:
        break
