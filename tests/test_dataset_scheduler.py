"""The same code against separately started `dask scheduler` + `dask worker` processes
(loopback only), giving the same bytes as a run in this process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twin.datasets.runner import run_dataset

from tests.test_dataset_helpers import leftovers, same_files, tiny_spec, worker_env


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _dask_cli() -> list[str]:
    exe = Path(sys.executable).with_name("dask")
    if exe.exists():
        return [str(exe)]
    if shutil.which("dask"):
        return ["dask"]
    pytest.skip("the dask command is not installed")


def test_external_scheduler_and_worker_on_loopback(tmp_path):
    spec = tiny_spec(count=3)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = worker_env()
    log = open(tmp_path / "dask.log", "wb")
    sched = subprocess.Popen(_dask_cli() + ["scheduler", "--host", "127.0.0.1", "--port", str(port),
                                            "--no-dashboard"], env=env, stdout=log, stderr=log)
    worker = None
    try:
        worker = subprocess.Popen(_dask_cli() + ["worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                                                 "--nthreads", "1", "--no-dashboard", "--memory-limit", "0"],
                                  env=env, stdout=log, stderr=log, cwd=str(Path(__file__).resolve().parents[1]))
        t0 = time.monotonic()
        r = run_dataset(spec, tmp_path / "ext", scheduler=address, quiet=True, verify=True,
                        connect_timeout_s=30)
        assert time.monotonic() - t0 < 240
        assert r["made"] == 3 and r["verified"] == 3
    finally:
        if worker is not None:
            _stop(worker)
        _stop(sched)
        log.close()
    assert leftovers(tmp_path / "ext") == []
    run_dataset(spec, tmp_path / "local", workers=0, quiet=True)
    names = ["manifest.jsonl"] + [f"shards/sample_{i:06d}.h5" for i in range(3)]
    assert same_files(tmp_path / "ext", tmp_path / "local", names) == []
