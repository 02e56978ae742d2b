"""Zarr shards (``[store] format = "zarr"``): the same arrays as HDF5, byte-identical folders,
checksums that catch a changed chunk, atomic writes, the reader serving both."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("zarr", reason="zarr not installed (optional extra xrm-twin[zarr])")

from twin.datasets.reader import DatasetReader  # noqa: E402
from twin.datasets.runner import run_dataset  # noqa: E402
from twin.datasets.sample import (build_sample, tree_sha256, verify_sample,  # noqa: E402
                                  write_shard, write_shard_zarr)
from twin.errors import XrmInputError  # noqa: E402

from tests.test_dataset_helpers import leftovers, tiny_spec  # noqa: E402


def _store(fmt):
    return {"patches": {"size": [8, 8, 8], "count": 2}, "format": fmt}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("zarr")
    zspec = tiny_spec(count=2, store=_store("zarr"))
    run_dataset(zspec, root / "z1", workers=0, quiet=True)
    run_dataset(zspec, root / "z2", workers=2, quiet=True, verify=True)
    return root, zspec


def test_zarr_and_hdf5_writers_store_the_same_content(tmp_path):
    """One sample's content written both ways reads back identical (arrays, tables, attrs)."""
    import h5py
    import zarr

    spec = tiny_spec(count=1, store=_store("zarr"))
    (tmp_path / "work").mkdir()
    content, _ = build_sample(spec, 0, tmp_path / "work")
    write_shard(tmp_path / "s.h5", content, 1)
    write_shard_zarr(tmp_path / "s.zarr", content, 1)
    z = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    with h5py.File(tmp_path / "s.h5") as h:
        for name in ("volume", "labels", "instances", "projections/data", "projections/flats",
                     "projections/angles_deg", "patches/volume", "patches/corner_zyx"):
            np.testing.assert_array_equal(z[name][...], h[name][...])
            assert z[name].dtype == h[name].dtype
        for name in ("materials", "defects"):
            assert json.loads(z[name].attrs["json"]) == json.loads(h[name].attrs["json"])
        assert z.attrs["scenario"] == h.attrs["scenario"].decode()
        np.testing.assert_allclose(z.attrs["origin_mm"], h.attrs["origin_mm"])


def test_reader_serves_zarr_shards(made):
    root, _ = made
    z = DatasetReader(root / "z1", fields=("volume", "labels", "instances"))
    assert [r["shard"] for r in z.rows] == ["shards/sample_000000.zarr", "shards/sample_000001.zarr"]
    item = z[1]
    assert item["volume"].dtype == np.float32 and item["labels"].shape == item["volume"].shape
    meta = z.metadata(1)
    assert meta["scenario"]["name"] and meta["materials"] and isinstance(meta["origin_mm"], list)
    assert len(DatasetReader(root / "z1", source="patches")) == 4
    p = DatasetReader(root / "z1", patch_size=8, patches_per_sample=2, seed=3)
    assert p[3]["volume"].shape == (8, 8, 8)


def test_zarr_folders_are_byte_identical_and_verified(made):
    root, spec = made
    for k in range(2):
        name = f"shards/sample_{k:06d}.zarr"
        assert tree_sha256(root / "z1" / name) == tree_sha256(root / "z2" / name)
        assert verify_sample(root / "z1", k, spec.spec_hash) is None
    assert (root / "z1" / "manifest.jsonl").read_bytes() == (root / "z2" / "manifest.jsonl").read_bytes()
    assert leftovers(root / "z1") == []


def test_a_changed_chunk_is_caught_and_remade(made, tmp_path):
    root, spec = made
    import shutil

    shutil.copytree(root / "z1", tmp_path / "d")
    chunk = next(p for p in sorted((tmp_path / "d" / "shards" / "sample_000001.zarr" / "volume").rglob("*"))
                 if p.is_file() and p.name != "zarr.json")
    good = chunk.read_bytes()
    chunk.write_bytes(good[:-4] + bytes(4))
    assert verify_sample(tmp_path / "d", 1, spec.spec_hash) in ("SHA-256 mismatch",) or \
        verify_sample(tmp_path / "d", 1, spec.spec_hash).startswith("size")
    r = run_dataset(spec, tmp_path / "d", workers=0, quiet=True, verify=True)
    assert r["made"] == 1 and r["skipped"] == 1
    assert chunk.read_bytes() == good
    row = json.loads((tmp_path / "d" / "shards" / "sample_000001.json").read_text())
    assert tree_sha256(tmp_path / "d" / row["shard"])[0] == row["sha256"]


def test_bad_format_names_the_choices():
    with pytest.raises(XrmInputError) as e:
        tiny_spec(count=1, store={"format": "netcdf"})
    assert "store.format" in str(e.value) and "zarr" in str(e.value)
