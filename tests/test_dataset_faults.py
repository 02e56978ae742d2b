"""Fault tolerance and bad input: a killed worker, a killed run then resumed, a full disk,
a folder of another spec, an unreachable scheduler."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from twin.datasets import sample as sample_mod
from twin.datasets.runner import run_dataset, verify_dataset
from twin.datasets.sample import DiskFullError
from twin.errors import XrmInputError

from tests.test_dataset_helpers import leftovers, tiny_spec, worker_env, write_spec_toml


def _complete(out: Path, n: int) -> None:
    """Every sample exactly once, no temporary files, every checksum verified."""
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(n))
    assert sorted(p.name for p in (out / "shards").glob("*.h5")) == [f"sample_{i:06d}.h5" for i in range(n)]
    assert leftovers(out) == []
    assert verify_dataset(out, count=n) == []


def _wait_for(pred, timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _rows(out: Path) -> int:
    return len(list((out / "shards").glob("sample_*.json"))) if (out / "shards").is_dir() else 0


def test_killing_a_worker_mid_run(tmp_path):
    from distributed import Client, LocalCluster

    spec = tiny_spec(count=5)
    env = {k: worker_env()[k] for k in ("XRM_TWIN_THREADS", "OMP_NUM_THREADS", "PYTHONPATH")}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, env=env) as cluster, Client(cluster) as client:
        result, errors = [], []

        def go():
            try:
                result.append(run_dataset(spec, tmp_path, scheduler=cluster.scheduler_address, quiet=True))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        th = threading.Thread(target=go)
        th.start()
        _wait_for(lambda: _rows(tmp_path) >= 1, 120, "a first sample")
        busy = {}
        _wait_for(lambda: busy.update({w: k for w, k in client.processing().items() if k}) or busy, 30,
                  "a worker with a task in progress")
        victim = sorted(busy)[0]
        pid = client.run(os.getpid, workers=[victim])[victim]
        done_at_kill = _rows(tmp_path)
        os.kill(pid, signal.SIGKILL)
        th.join(timeout=180)
        assert not th.is_alive() and not errors, errors
    assert done_at_kill < spec.count
    assert result[0]["made"] == spec.count
    _complete(tmp_path, spec.count)


def test_killing_the_whole_run_then_resuming(tmp_path):
    spec_file = write_spec_toml(tmp_path / "spec.toml", count=5)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "twin.datasets.cli", str(spec_file), "--out", str(out),
                             "--workers", "2", "--quiet"], env=worker_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _rows(out) >= 2 or proc.poll() is not None, 150, "two samples")
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the client, the nannies and the workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    made_before = _rows(out)
    assert made_before < 5 and not (out / "manifest.jsonl").exists()
    from twin.datasets.spec import load_dataset_spec

    r = run_dataset(load_dataset_spec(spec_file), out, workers=0, quiet=True, verify=True)
    assert r["skipped"] >= made_before and r["skipped"] + r["made"] == 5
    _complete(out, 5)


def test_full_disk_stops_cleanly_then_resumes(tmp_path, monkeypatch):
    spec = tiny_spec(count=3)
    real = sample_mod.write_shard

    def flaky(path, content, level):
        if content["attrs"]["index"] == 1:
            Path(path).write_bytes(b"\0" * 1000)  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, content, level)

    monkeypatch.setattr(sample_mod, "write_shard", flaky)
    with pytest.raises(DiskFullError, match="no space left.*stopped cleanly after 1 of 3"):
        run_dataset(spec, tmp_path, workers=0, quiet=True)
    assert leftovers(tmp_path) == []
    assert [p.name for p in (tmp_path / "shards").glob("*.h5")] == ["sample_000000.h5"]
    monkeypatch.setattr(sample_mod, "write_shard", real)
    r = run_dataset(spec, tmp_path, workers=0, quiet=True, verify=True)
    assert r["skipped"] == 1 and r["made"] == 2
    _complete(tmp_path, 3)


def test_really_full_disk(tmp_path):
    """On a 150 kB tmpfs (when this process may mount one): ENOSPC from h5py or the core."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with pytest.raises(DiskFullError, match="no space left"):
            run_dataset(tiny_spec(count=4), mnt, workers=0, quiet=True, figure=False)
        assert leftovers(mnt) == []
        for p in (mnt / "shards").glob("*.h5"):  # what was kept is complete
            assert sample_mod.verify_sample(mnt, int(p.stem.split("_")[1])) is None
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_folder_of_another_spec_is_refused_unless_forced(tmp_path):
    run_dataset(tiny_spec(count=1), tmp_path, workers=0, quiet=True)
    other = tiny_spec(count=1, seed=99)
    with pytest.raises(XrmInputError, match="another spec.*--force"):
        run_dataset(other, tmp_path, workers=0, quiet=True)
    r = run_dataset(other, tmp_path, workers=0, quiet=True, force=True, verify=True)
    assert r["made"] == 1
    assert json.loads((tmp_path / "dataset.json").read_text())["spec_hash"] == other.spec_hash


def test_unreachable_scheduler_names_the_address(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    address = f"tcp://127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(XrmInputError, match=f"cannot reach the Dask scheduler at '{address}'"):
        run_dataset(tiny_spec(count=1), tmp_path, scheduler=address, quiet=True, connect_timeout_s=2)
    assert time.monotonic() - t0 < 20
