"""Data sources of the built-in trainer and the determinism of its batches."""
from __future__ import annotations

import numpy as np
import pytest

from isoflop.train import data


@pytest.fixture(scope="module")
def corpus():
    return data.stdlib_corpus()


def test_stdlib_corpus_cached_and_stable(corpus, tmp_path, monkeypatch):
    assert corpus.vocab_size == 256 and corpus.train.dtype == np.uint8
    assert len(corpus.train) > 1_000_000 and len(corpus.val) > 10_000
    assert 0.002 < len(corpus.val) / len(corpus.train) < 0.05
    # a fresh build elsewhere gives byte-identical splits (deterministic recipe, stable val split)
    monkeypatch.setenv("ISOFLOP_CACHE", str(tmp_path))
    fresh = data.stdlib_corpus()
    assert (tmp_path / f"{data.stdlib_key()}-train.u8").exists()
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
    assert np.array_equal(fresh.train, corpus.train) and np.array_equal(fresh.val, corpus.val)


def test_val_split_is_a_function_of_the_path():
    names = [f"pkg/mod{i}.py" for i in range(2000)]
    a = [data._is_val(n) for n in names]
    assert a == [data._is_val(n) for n in names]
    assert 5 < sum(a) < 40  # about 1%


def test_batches_deterministic_in_seed_and_step(corpus):
    b1 = data.train_batch(corpus, seed=3, step=17, batch_seqs=4, seq_len=32)
    b2 = data.train_batch(corpus, seed=3, step=17, batch_seqs=4, seq_len=32)
    assert b1.shape == (4, 33) and b1.dtype == np.int64
    assert np.array_equal(b1, b2)
    assert not np.array_equal(b1, data.train_batch(corpus, seed=3, step=18, batch_seqs=4, seq_len=32))
    assert not np.array_equal(b1, data.train_batch(corpus, seed=4, step=17, batch_seqs=4, seq_len=32))
    # targets are the inputs shifted by one
    off = data.batch_indices(len(corpus.train), 3, 17, 4, 32)
    assert np.array_equal(b1[0], corpus.train[off[0]:off[0] + 33])


def test_eval_batches_fixed(corpus):
    e1 = data.eval_batches(corpus, 3, 4, 32, eval_seed=1234)
    e2 = data.eval_batches(corpus, 3, 4, 32, eval_seed=1234)
    assert len(e1) == 3 and all(np.array_equal(a, b) for a, b in zip(e1, e2))
    assert not np.array_equal(e1[0], e1[1])
    assert all(a.max() < 256 for a in e1)


def test_text_folder_and_file(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for i in range(30):
        (folder / ("sub" if i % 2 else "") / f"f{i}.txt").write_text(f"document {i} " * 200)
    (folder / "dup.txt").write_text("document 0 " * 200)  # duplicate content: dropped
    s = data.load("text", str(folder), seq_len=16)
    assert s.vocab_size == 256 and len(s.val) > 0 and len(s.train) > 0
    total = sum(len(f"document {i} " * 200) for i in range(30))
    assert len(s.train) + len(s.val) == total
    assert np.array_equal(data.load("text", str(folder)).val, s.val)
    one = tmp_path / "one.txt"
    one.write_bytes(bytes(range(256)) * 200)
    s1 = data.load("text", str(one), seq_len=16)
    assert len(s1.train) + len(s1.val) == 256 * 200 and len(s1.val) >= 4096
    assert data.train_batch(s1, 0, 0, 2, 16).shape == (2, 17)


def test_uint16_tokens(tmp_path):
    rng = np.random.default_rng(0)
    rng.integers(0, 50000, 10_000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    rng.integers(0, 50000, 2_000, dtype=np.uint16).tofile(tmp_path / "val.bin")
    s = data.load("tokens", str(tmp_path), seq_len=64)
    assert s.train.dtype == np.uint16 and len(s.train) == 10_000
    b = data.train_batch(s, 0, 5, 3, 64)
    assert b.dtype == np.int64 and b.max() < 50000 and b.shape == (3, 65)
    with pytest.raises(FileNotFoundError):
        data.load("tokens", str(tmp_path / "missing"))
