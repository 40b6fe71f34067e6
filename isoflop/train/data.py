"""Training data: token arrays and batches that are deterministic functions of (seed, step).

Sources (run.json `data.kind`):
  stdlib  the embedded default corpus, offline everywhere: the bytes of the running interpreter's
          standard-library .py sources (byte-level, vocab 256). Directories named site-packages,
          dist-packages, __pycache__, test, tests and idle_test are skipped; files are walked in
          sorted order, deduplicated by content hash (first path wins), and a file goes to the
          validation split when sha1(relative path) mod 100 == 0 (~1% of files). The two splits
          are cached as raw uint8 files under $ISOFLOP_CACHE (default ~/.cache/isoflop), keyed
          by the Python version, written atomically (tmp + rename), so later runs memory-map
          them in milliseconds.
  text    a user's text file or folder of files, byte-level (vocab 256). A folder is split by
          file like the stdlib corpus; a single file (or a folder whose split leaves one side
          empty) is split by position: the last 1% of bytes (at least 2 sequences) is validation.
  tokens  pre-tokenized nanoGPT layout: `train.bin` and `val.bin` of uint16 in data.path.

Batches: the training batch of step s is drawn with np.random.default_rng([seed, s]), so a run
resumed at step s sees exactly the batches it would have seen. Evaluation uses fixed held-out
batches that depend only on the eval seed (not on the run), so every run of a sweep is scored
on the same tokens.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CORPUS_VERSION = 1  # bump when the corpus recipe changes (new cache key)
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})
VAL_MOD = 100


@dataclass
class Splits:
    train: np.ndarray  # 1-D integer array (uint8 or uint16), possibly a memmap
    val: np.ndarray
    vocab_size: int
    source: str


def cache_dir() -> Path:
    d = os.environ.get("ISOFLOP_CACHE")
    return Path(d) if d else Path.home() / ".cache" / "isoflop"


def _is_val(rel: str) -> bool:
    return int.from_bytes(hashlib.sha1(rel.encode()).digest()[:8], "big") % VAL_MOD == 0


def _collect(root: Path, suffix: str | None) -> list[tuple[str, bytes]]:
    """(relative path, bytes) of files under root in sorted order, deduplicated by content."""
    out: list[tuple[str, bytes]] = []
    seen: set[bytes] = set()
    for dp, dns, fns in os.walk(root):
        dns[:] = sorted(d for d in dns if d not in SKIP_DIRS and not d.startswith("."))
        for fn in sorted(fns):
            if fn.startswith(".") or (suffix and not fn.endswith(suffix)):
                continue
            p = Path(dp) / fn
            try:
                b = p.read_bytes()
            except OSError:
                continue
            h = hashlib.sha1(b).digest()
            if not b or h in seen:
                continue
            seen.add(h)
            out.append((p.relative_to(root).as_posix(), b))
    return out


def _split_files(files: list[tuple[str, bytes]], min_val: int) -> tuple[bytes, bytes]:
    train = b"".join(b for rel, b in files if not _is_val(rel))
    val = b"".join(b for rel, b in files if _is_val(rel))
    if len(val) < min_val or len(train) < min_val:
        return _split_bytes(b"".join(b for _, b in files), min_val)
    return train, val


def _split_bytes(b: bytes, min_val: int) -> tuple[bytes, bytes]:
    n_val = max(len(b) // 100, min_val)
    if len(b) < 2 * n_val:
        raise ValueError(f"text data too small: {len(b)} bytes; need at least {2 * n_val}")
    return b[:-n_val], b[-n_val:]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{socket.gethostname()}.{os.getpid()}")  # unique on a shared FS
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stdlib_key() -> str:
    v = sys.version_info
    return f"stdlib-{sys.implementation.name}{v.major}.{v.minor}.{v.micro}-v{CORPUS_VERSION}"


def stdlib_corpus(cache: Path | None = None) -> Splits:
    """The embedded default corpus (see module doc), built once per Python version and cached."""
    cache = cache or cache_dir()
    key = stdlib_key()
    tr, va = cache / f"{key}-train.u8", cache / f"{key}-val.u8"
    if not (tr.exists() and va.exists()):
        root = Path(sysconfig.get_paths()["stdlib"])
        train, val = _split_files(_collect(root, ".py"), min_val=1 << 16)
        # val first: a reader checks both, and the train file's appearance completes the pair
        _atomic_write(va, val)
        _atomic_write(tr, train)
    return Splits(np.memmap(tr, dtype=np.uint8, mode="r"), np.memmap(va, dtype=np.uint8, mode="r"), 256, key)


def text_corpus(path: str | Path, min_val: int = 4096) -> Splits:
    p = Path(path).expanduser()
    if p.is_dir():
        files = _collect(p, None)
        if not files:
            raise ValueError(f"no files under {p}")
        train, val = _split_files(files, min_val) if len(files) > 1 else _split_bytes(files[0][1], min_val)
    elif p.is_file():
        train, val = _split_bytes(p.read_bytes(), min_val)
    else:
        raise FileNotFoundError(f"text data {p} does not exist")
    return Splits(np.frombuffer(train, dtype=np.uint8), np.frombuffer(val, dtype=np.uint8), 256, f"text:{p}")


def token_corpus(path: str | Path) -> Splits:
    p = Path(path).expanduser()
    tr, va = p / "train.bin", p / "val.bin"
    for f in (tr, va):
        if not f.exists():
            raise FileNotFoundError(f"token data needs {f} (uint16, nanoGPT layout)")
    train = np.memmap(tr, dtype=np.uint16, mode="r")
    val = np.memmap(va, dtype=np.uint16, mode="r")
    return Splits(train, val, 65536, f"tokens:{p}")


def load(kind: str = "stdlib", path: str | None = None, seq_len: int | None = None,
         vocab_size: int | None = None) -> Splits:
    if kind == "stdlib":
        s = stdlib_corpus()
    elif kind == "text":
        s = text_corpus(path)  # type: ignore[arg-type]
    elif kind == "tokens":
        s = token_corpus(path)  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown data kind {kind!r}")
    if seq_len is not None:
        for name, arr in (("train", s.train), ("val", s.val)):
            if len(arr) < seq_len + 2:
                raise ValueError(f"{s.source}: {name} split has {len(arr)} tokens, fewer than seq_len+2 = {seq_len + 2}")
    if vocab_size is not None and kind != "tokens" and vocab_size < 256:
        raise ValueError(f"byte-level data needs vocab_size >= 256, shape has {vocab_size}")
    return s


EVAL_TAG = 0xE7A1  # makes the held-out stream distinct from every training stream


def batch_indices(n: int, seed: int, step: int, batch_seqs: int, seq_len: int, tag: int | None = None) -> np.ndarray:
    """Start offsets of one batch: a pure function of (seed, step) (and tag, for evaluation)."""
    rng = np.random.default_rng([seed, step] if tag is None else [seed, step, tag])
    return rng.integers(0, n - seq_len - 1, size=batch_seqs, dtype=np.int64)


def gather(data: np.ndarray, offsets: np.ndarray, seq_len: int) -> np.ndarray:
    """(B, seq_len+1) int64 windows starting at offsets."""
    idx = offsets[:, None] + np.arange(seq_len + 1, dtype=np.int64)[None, :]
    return np.asarray(data[idx], dtype=np.int64)


def train_batch(splits: Splits, seed: int, step: int, batch_seqs: int, seq_len: int) -> np.ndarray:
    """Step `step`'s batch as a (batch_seqs, seq_len+1) int64 array: inputs [:, :-1], targets [:, 1:]."""
    return gather(splits.train, batch_indices(len(splits.train), seed, step, batch_seqs, seq_len), seq_len)


def eval_batches(splits: Splits, n_batches: int, batch_seqs: int, seq_len: int, eval_seed: int = 1234) -> list[np.ndarray]:
    """Fixed held-out batches: depend only on the eval seed, the val split and the sizes."""
    return [gather(splits.val, batch_indices(len(splits.val), eval_seed, i, batch_seqs, seq_len, EVAL_TAG), seq_len)
            for i in range(n_batches)]


def train_rows(splits: Splits, seed: int, step: int, batch_seqs: int, seq_len: int, lo: int, hi: int) -> np.ndarray:
    """Rows lo:hi of step `step`'s batch (one rank's share): the same tokens whatever the number of
    ranks, so a run resumed on another number of ranks sees the same data."""
    offsets = batch_indices(len(splits.train), seed, step, batch_seqs, seq_len)[lo:hi]
    return gather(splits.train, offsets, seq_len)
