"""Determinism: byte-identical shards and manifest with 1 or 2 workers and any finishing order."""

from __future__ import annotations

import json

from twin.datasets.runner import run_dataset
from twin.datasets.sample import run_sample, verify_sample

from tests.test_dataset_helpers import leftovers, same_files, tiny_spec


def test_one_worker_two_workers_and_shuffled_order_give_identical_bytes(tmp_path):
    spec = tiny_spec(count=3)
    n = spec.count
    a, b, c = tmp_path / "one", tmp_path / "two", tmp_path / "shuffled"
    ra = run_dataset(spec, a, workers=1, quiet=True)
    rb = run_dataset(spec, b, workers=2, quiet=True, verify=True)
    assert ra["made"] == n and rb["made"] == n and rb["verified"] == n
    # the same tasks run in this process, finishing in a shuffled order; the runner then only
    # verifies them (resume) and writes the manifest
    order = [2, 0, 1]
    for i in order:
        run_sample(spec, i, c)
    rc = run_dataset(spec, c, workers=0, quiet=True)
    assert rc["skipped"] == n and rc["made"] == 0
    names = ["manifest.jsonl", "dataset.json"] + [f"shards/sample_{i:06d}.h5" for i in range(n)] \
        + [f"shards/sample_{i:06d}.json" for i in range(n)]
    assert same_files(a, b, names) == []
    assert same_files(a, c, names) == []
    rows = [json.loads(line) for line in (a / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(n))
    assert len({r["sha256"] for r in rows}) == n  # samples differ from each other
    assert all(verify_sample(a, i, spec.spec_hash) is None for i in range(n))
    assert leftovers(a) == leftovers(b) == leftovers(c) == []
    assert (a / "summary.png").stat().st_size > 1000


def test_resume_skips_verified_and_remakes_corrupted(tmp_path):
    spec = tiny_spec(count=2)
    run_dataset(spec, tmp_path, workers=0, quiet=True)
    shard = tmp_path / "shards" / "sample_000001.h5"
    good = shard.read_bytes()
    shard.write_bytes(good[:-10] + b"0123456789")  # same size, other bytes
    assert verify_sample(tmp_path, 1, spec.spec_hash) == "SHA-256 mismatch"
    r = run_dataset(spec, tmp_path, workers=0, quiet=True, verify=True)
    assert r["skipped"] == 1 and r["made"] == 1
    assert shard.read_bytes() == good
