"""Shard store: resume by shard, one UserError for a corrupt shard, fixed and variable-length rows across shards."""

from __future__ import annotations

import re

import pytest
import torch
from test_layers import import_graph

from modalbridge import shards
from modalbridge.errors import UserError
from modalbridge.files import FILE_MODE

N, SHARD = 10, 4  # shards of rows [0, 4), [4, 8), [8, 10)


def make_rows(seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(N, 3, 2) fixed rows and N variable-length (T_i, 5) rows, some empty."""
    g = torch.Generator().manual_seed(seed)
    fixed = torch.randn(N, 3, 2, generator=g)
    lengths = torch.randint(0, 6, (N,), generator=g).tolist()
    lengths[3] = 0  # last row of shard 0
    return fixed, [torch.randn(t, 5, generator=g) for t in lengths]


def write(root, fixed, ragged, **kwargs) -> list[int]:
    """Write every missing shard; returns which ones were computed."""
    w = shards.ShardWriter(root, N, SHARD, fixed=["x"], ragged=["states"], **kwargs)
    todo = w.missing()
    for s in todo:
        lo, hi = w.bounds(s)
        w.write(s, fixed={"x": fixed[lo:hi]}, ragged={"states": ragged[lo:hi]})
    w.finish({"what": "test"})
    return todo


def test_key_is_stable_and_sensitive():
    a = shards.key({"encoder": "e", "layer": -1})
    assert a == shards.key({"layer": -1, "encoder": "e"}) and len(a) == 24
    assert a != shards.key({"encoder": "e", "layer": 0})
    assert len(shards.key({"x": 1}, length=12)) == 12


def test_round_trip_and_resume_recomputes_only_the_missing_shard(tmp_path):
    fixed, ragged = make_rows()
    assert write(tmp_path, fixed, ragged) == [0, 1, 2]
    store = shards.load(tmp_path)
    meta = store.meta
    assert meta["what"] == "test" and meta["n"] == N and meta["n_shards"] == 3 and len(store) == N
    assert [sh["n"] for sh in meta["shards"]] == [4, 4, 2]
    assert all((p.stat().st_mode & 0o777) == FILE_MODE for p in tmp_path.glob("*.safetensors"))  # not 0o600
    assert meta["tokens"] == sum(len(r) for r in ragged)
    assert meta["fields"]["x"] == {"ragged": False, "shape": [3, 2], "dtype": "float32"}
    assert meta["fields"]["states"]["ragged"] and store.has("x") and not store.has("y")

    # Interrupted: meta.json and shard 1 gone -> only shard 1 is computed again, shards 0 and 2 stay untouched.
    (tmp_path / "meta.json").unlink()
    (tmp_path / shards.shard_file(1)).unlink()
    assert shards.complete(tmp_path) is None
    kept = {s: (tmp_path / shards.shard_file(s)).stat().st_mtime_ns for s in (0, 2)}
    assert write(tmp_path, fixed, ragged) == [1]
    assert {s: (tmp_path / shards.shard_file(s)).stat().st_mtime_ns for s in (0, 2)} == kept
    assert shards.complete(tmp_path) is not None
    store = shards.load(tmp_path)
    torch.testing.assert_close(store.rows("x").tensor(), fixed)
    torch.testing.assert_close(store.ragged("states").tensor(), torch.cat(ragged))

    # A shard gone from a complete entry makes it incomplete again.
    (tmp_path / shards.shard_file(2)).unlink()
    assert shards.complete(tmp_path) is None
    assert write(tmp_path, fixed, ragged) == [2]


def test_another_plan_or_fresh_discards_old_shards(tmp_path):
    fixed, ragged = make_rows()
    write(tmp_path, fixed, ragged, spec={"dtype": "float32"})
    assert write(tmp_path, fixed, ragged, spec={"dtype": "float32"}) == []
    assert write(tmp_path, fixed, ragged, spec={"dtype": "float16"}) == [0, 1, 2]
    assert write(tmp_path, fixed, ragged, spec={"dtype": "float16"}, fresh=True) == [0, 1, 2]
    w = shards.ShardWriter(tmp_path, N, 5, fixed=["x"], ragged=["states"], spec={"dtype": "float16"})
    assert w.missing() == [0, 1] and not (tmp_path / "meta.json").exists()


def test_writer_checks_rows(tmp_path):
    fixed, ragged = make_rows()
    w = shards.ShardWriter(tmp_path, N, SHARD, fixed=["x"], ragged=["states"])
    with pytest.raises(ValueError, match="rows"):
        w.write(0, fixed={"x": fixed[:3]}, ragged={"states": ragged[:4]})
    with pytest.raises(ValueError, match="fields"):
        w.write(0, fixed={"x": fixed[:4]})
    with pytest.raises(ValueError, match="not written"):
        w.finish({})


@pytest.mark.parametrize("cut", ["header", "data"])
def test_corrupt_shard_is_one_user_error_naming_the_file(tmp_path, cut):
    fixed, ragged = make_rows()
    write(tmp_path, fixed, ragged)
    shard = tmp_path / shards.shard_file(1)
    data = shard.read_bytes()
    shard.write_bytes(data[:20] if cut == "header" else data[:-16])
    with pytest.raises(UserError, match=f"{re.escape(str(shard))}.*unreadable"):
        shards.load(tmp_path)
    shard.unlink()
    with pytest.raises(UserError, match=re.escape(str(shard))):
        shards.load(tmp_path)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(UserError, match="no readable meta.json"):
        shards.load(tmp_path)


def test_variable_length_rows_across_shard_boundaries(tmp_path):
    fixed, ragged = make_rows(seed=1)
    write(tmp_path, fixed, ragged)
    rows = shards.load(tmp_path).ragged("states")
    assert len(rows) == N and rows.shape == (sum(len(r) for r in ragged), 5) and rows.dtype == torch.float32
    assert rows.lengths.tolist() == [len(r) for r in ragged]
    assert len(rows.values) == 3  # one mapped tensor per shard, not concatenated
    for i in range(N):
        torch.testing.assert_close(rows[i], ragged[i])
    torch.testing.assert_close(rows[-1], ragged[-1])
    assert rows[3].shape == (0, 5)
    flat = rows.tensor()
    for i in (3, 4, 7, 8):  # around the boundaries
        torch.testing.assert_close(flat[rows.offsets[i] : rows.offsets[i + 1]], ragged[i])
    with pytest.raises(IndexError):
        rows[N]


def test_fixed_rows_index_by_int_slice_and_tensor(tmp_path):
    fixed, ragged = make_rows()
    write(tmp_path, fixed.to(torch.bfloat16), ragged)
    rows = shards.load(tmp_path).rows("x")
    assert rows.shape == (N, 3, 2) and rows.dtype == torch.bfloat16
    ref = fixed.to(torch.bfloat16)
    torch.testing.assert_close(rows[5], ref[5])
    torch.testing.assert_close(rows[-1], ref[-1])
    torch.testing.assert_close(rows[2:9], ref[2:9])  # spans all three shards
    torch.testing.assert_close(rows[torch.tensor([9, 0, 4])], ref[[9, 0, 4]])
    assert rows[5:5].shape == (0, 3, 2)
    with pytest.raises(IndexError):
        rows[N]


def test_the_store_is_bottom_layer():
    assert import_graph()["modalbridge.shards"] <= {"modalbridge.errors", "modalbridge.files"}
