#!/usr/bin/env bash
# The GPU code paths, end to end, on one CUDA machine: a tiny IsoFLOP sweep of the built-in trainer
# (bf16 autocast, torch.compile, SDPA flash attention) through the real CLI and the local backend,
# then the trainer's throughput and MFU against Hugging Face's Llama (benchmarks/trainer_throughput.py).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # needs torch with CUDA; ~6 min on one H200
#
# Results are recorded in benchmarks/README.md ("GPU").
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
PY=${PYTHON:-python3}
nvidia-smi -L; $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"

echo "== flash attention: our model's forward/backward under SDPBackend.FLASH_ATTENTION only (bf16)"
$PY - <<'PY'
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from isoflop.plan.flops import Shape
from isoflop.train.model import build
m = build(Shape(4, 512, 8, 256, 1024, "swiglu", True)).cuda()
x = torch.randint(0, 256, (8, 1025), device="cuda")
with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
    out = m(x[:, :-1], x[:, 1:])
loss = out[1] if isinstance(out, tuple) else out
loss.backward()
print("flash attention forward+backward ok, loss", float(loss))
PY

echo "== a CUDA sweep through the CLI (plan, submit --profile local, status, fit)"
w="$out/work"; rm -rf "$w"; mkdir -p "$w"
cat > "$out/gpu-sweep.yaml" <<'YAML'
name: gpu-check
budgets: [3.0e13, 1.0e14, 3.0e14]
grid: {points: 5, span: 16, centre: {k: 0.045}}
model: {vocab_size: 256, seq_len: 256, head_dim: 32, aspect_ratio: 32, mlp: swiglu, tied: true}
flops: exact
params: all
batch: {rule: 64, unit: sequences}
lr: {coef: 3.0e-3}
schedule: {kind: cosine, warmup_frac: 0.05, min_lr_frac: 0.1}
seeds: [0]
data: {kind: stdlib}
trainer: {template: builtin, device: cuda, compile: true, dtype: bf16, threads: 1, eval_batches: 16, log_every: 50}
YAML
export ISOFLOP_WORKDIR="$w"
t0=$(date +%s)
$PY -m isoflop plan "$out/gpu-sweep.yaml" && $PY -m isoflop submit gpu-check --profile local || exit 1
for _ in $(seq 1 60); do
  $PY -m isoflop status gpu-check --json > "$out/status.json" 2>/dev/null
  $PY -c "import json,sys; d=json.load(open('$out/status.json')); sys.exit(0 if d['active']==0 else 1)" && break
  sleep 5
done
echo "sweep wall time: $(( $(date +%s) - t0 )) s"
$PY -m isoflop status gpu-check
$PY -m isoflop fit gpu-check --bootstrap 200 || true
$PY - "$w" <<'PY'
import json, pathlib, sys
for p in sorted(pathlib.Path(sys.argv[1]).glob("runs/*/*/result.json")):
    r = json.loads(p.read_text())
    print(p.parent.name, {k: r.get(k) for k in ("status", "val_loss", "device", "dtype", "compiled", "tokens_per_s", "wall_s")})
PY

echo "== throughput and MFU (H200 bf16 dense peak 989 TFLOP/s, as H100 SXM)"
timeout 240 $PY benchmarks/trainer_throughput.py --cuda-only --peak-flops 989e12 --rounds 4 --budget-s 2
