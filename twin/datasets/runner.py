"""Run a dataset on Dask distributed: resume, verify, manifest, progress, summary figure.

Output folder::

    dataset.json              the validated spec, its hash and count (written first)
    manifest.jsonl            one row per sample, in index order (byte-identical whatever the
                              number of workers or the order they finish in)
    summary.png               histograms of the drawn parameters and the split counts
    shards/sample_NNNNNN.h5   one HDF5 shard per sample (see twin.datasets.sample)
    shards/sample_NNNNNN.json its manifest row (written after the shard)

A LocalCluster (``workers`` processes, one thread each) is the default; ``scheduler`` uses an
existing Dask scheduler instead (dask-jobqueue, ``dask scheduler`` + ``dask worker``): the
workers must import xrm-twin and see ``out_dir`` at the same path. Samples are independent
tasks; a task lost with its worker is run again elsewhere (Dask retries), and because
shards are written atomically a killed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from twin.errors import XrmInputError

from twin.datasets.sample import (SHARDS, WORK, DiskFullError, canonical_json, is_disk_full, read_row,
                                  run_sample, verify_sample, write_text_atomic)
from twin.datasets.spec import DatasetSpec

MANIFEST = "manifest.jsonl"
SPEC_FILE = "dataset.json"
FIGURE = "summary.png"
LOCK = ".lock"
_log = logging.getLogger("xrm_twin")


class DatasetError(XrmInputError):
    """A dataset run that could not complete (failed samples, checksum mismatches)."""


# ------------------------------------------------------------------------------ folder

def cleanup_temporaries(out: Path) -> int:
    """Remove scratch folders and half-written ``.part`` files; return how many."""
    n = 0
    work = out / WORK
    if work.exists():
        n += sum(1 for _ in work.iterdir())
        shutil.rmtree(work, ignore_errors=True)
    for d in (out, out / SHARDS):
        if d.is_dir():
            for p in d.iterdir():
                if p.name.startswith(".") and p.name.endswith(".part"):
                    with contextlib.suppress(FileNotFoundError):
                        if p.is_dir():  # a half-written Zarr shard
                            shutil.rmtree(p)
                        else:
                            p.unlink()
                        n += 1
    return n


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """One run per output folder (an advisory lock the OS drops if the run dies)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise XrmInputError(f"another xrm-twin dataset run is writing to {str(out)!r}") from None
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def check_folder(spec: DatasetSpec, out: Path, force: bool) -> None:
    """Refuse a folder that holds a dataset of another spec (``force`` clears it)."""
    existing = None
    if (out / SPEC_FILE).is_file():
        try:
            existing = json.loads((out / SPEC_FILE).read_text(encoding="utf-8")).get("spec_hash")
        except (OSError, ValueError):
            existing = "unreadable"
    else:  # no dataset.json: judge by the rows of the manifest and of the shards
        hashes = set()
        texts = [(out / MANIFEST).read_text(encoding="utf-8")] if (out / MANIFEST).is_file() else []
        if (out / SHARDS).is_dir():
            texts += [p.read_text(encoding="utf-8") for p in sorted((out / SHARDS).glob("sample_*.json"))]
            if not texts and (any((out / SHARDS).glob("sample_*.h5"))
                              or any((out / SHARDS).glob("sample_*.zarr"))):
                hashes.add("unknown")
        for text in texts:
            for line in text.splitlines():
                try:
                    hashes.add(json.loads(line).get("spec_hash", "unknown"))
                except ValueError:
                    hashes.add("unknown")
        hashes.discard(spec.spec_hash)
        existing = sorted(hashes)[0] if hashes else None
    if existing is None or existing == spec.spec_hash:
        return
    if not force:
        raise XrmInputError(
            f"output folder {str(out)!r} holds a dataset of another spec (hash {str(existing)[:12]}, "
            f"this spec {spec.spec_hash[:12]}); use --force to delete it and start fresh, or "
            "choose another --out")
    for name in (SPEC_FILE, MANIFEST, FIGURE):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    shutil.rmtree(out / SHARDS, ignore_errors=True)
    shutil.rmtree(out / WORK, ignore_errors=True)


def write_manifest(out: Path, rows: list[Mapping[str, Any]]) -> Path:
    """``manifest.jsonl``: rows sorted by index, canonical JSON, written atomically."""
    rows = sorted(rows, key=lambda r: r["index"])
    text = "".join(canonical_json({k: v for k, v in r.items() if not k.startswith("_")}) + "\n"
                   for r in rows)
    write_text_atomic(out / MANIFEST, text)
    return out / MANIFEST


def read_manifest(out: str | Path) -> list[dict]:
    p = Path(out) / MANIFEST
    if not p.is_file():
        raise XrmInputError(f"{str(out)!r} has no {MANIFEST}: not a finished xrm-twin dataset")
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------- Dask

def _worker_env(spec: DatasetSpec) -> dict[str, str]:
    t = str(spec.threads_per_task)
    return {"XRM_TWIN_THREADS": t, "OMP_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t,
            "MKL_NUM_THREADS": t, "XRM_TWIN_QUIET_ARCH": "1"}


@contextlib.contextmanager
def dask_client(spec: DatasetSpec, *, workers: int | None, scheduler: str | None,
                connect_timeout_s: float = 10.0) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` or to a new LocalCluster of ``workers``."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
        try:
            client = Client(address, timeout=connect_timeout_s)
        except (OSError, TimeoutError, ValueError) as exc:
            raise XrmInputError(f"cannot reach the Dask scheduler at {scheduler!r} within "
                                f"{connect_timeout_s:g} s ({type(exc).__name__}: {exc}); check the "
                                "address and that `dask scheduler` is running") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = int(workers if workers is not None else os.cpu_count() or 1)
    if n < 1:
        raise XrmInputError(f"--workers must be >= 0, got {workers}")
    with dask.config.set({"distributed.worker.daemon": False,
                          "distributed.scheduler.allowed-failures": 5,
                          "distributed.logging.distributed": "error"}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               scheduler_kwargs={"dashboard": False},
                               silence_logs=logging.CRITICAL, env=_worker_env(spec),
                               memory_limit=0)
        try:
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()


# ---------------------------------------------------------------------------- progress

class _Progress:
    """Overall bar plus one line per finished sample (rich), or nothing when quiet."""

    def __init__(self, total: int, done: int, quiet: bool, label: str):
        self.quiet = quiet
        self.prog = None
        if not quiet:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[running]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), transient=False)
            self.task = self.prog.add_task(label, total=total, completed=done, running="")

    def __enter__(self):
        if self.prog is not None:
            self.prog.__enter__()
        return self

    def __exit__(self, *exc):
        if self.prog is not None:
            self.prog.__exit__(*exc)

    def sample(self, row: Mapping[str, Any], running: int) -> None:
        if self.prog is None:
            return
        self.prog.console.print(f"  sample {row['index']:6d}  {row['split']:5s}  "
                                f"{row.get('_elapsed_s', float('nan')):6.1f} s  "
                                f"{row['bytes'] / 1024:8.1f} KiB  {row['sha256'][:12]}")
        self.prog.update(self.task, advance=1, running=f"{running} running")

    def note(self, text: str) -> None:
        if self.prog is not None:
            self.prog.console.print(text)


# ------------------------------------------------------------------------------- run

def verify_dataset(out: str | Path, spec_hash: str | None = None, count: int | None = None
                   ) -> list[tuple[int, str]]:
    """Check every shard against the manifest; return [(index, reason)] of bad ones."""
    out = Path(out)
    rows = read_manifest(out)
    bad = []
    seen = set()
    for r in rows:
        if r["index"] in seen:
            bad.append((r["index"], "duplicate manifest row"))
        seen.add(r["index"])
        why = verify_sample(out, r["index"], spec_hash, row=r)
        if why:
            bad.append((r["index"], why))
    if count is not None:
        for i in sorted(set(range(count)) - seen):
            bad.append((i, "missing from the manifest"))
    return bad


def run_dataset(spec: DatasetSpec, out_dir: str | Path, *, workers: int | None = None,
                scheduler: str | None = None, resume: bool = True, verify: bool = False,
                force: bool = False, quiet: bool = False, connect_timeout_s: float = 10.0,
                retries: int = 0, figure: bool = True,
                on_sample: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Make every sample of ``spec`` under ``out_dir`` and write the manifest.

    Parameters
    ----------
    workers : int, optional
        LocalCluster worker processes (one thread each); default: the CPU count. ``0`` runs
        the samples in this process, one after the other (no Dask; for debugging).
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``) instead of a LocalCluster.
    resume : bool
        Skip samples whose shard exists and matches its recorded checksum (default). With
        ``False`` every sample is made again.
    verify : bool
        After the run, check the SHA-256 of every shard against the manifest; raise
        :class:`DatasetError` listing mismatches.
    force : bool
        Delete a dataset of another spec found in ``out_dir`` instead of refusing.

    Returns
    -------
    dict with ``made``, ``skipped``, ``count``, ``manifest``, ``wall_s``, ``samples_per_hour``,
    ``spec_hash`` and ``failed`` (index -> message).
    """
    out = Path(out_dir)
    t0 = time.perf_counter()
    if workers is not None and scheduler is not None:
        raise XrmInputError("give either --workers or --scheduler, not both")
    if workers is not None and (isinstance(workers, bool) or int(workers) < 0):
        raise XrmInputError(f"--workers must be >= 0 (0: in this process), got {workers}")
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        check_folder(spec, out, force)
        cleanup_temporaries(out)
        try:
            write_text_atomic(out / SPEC_FILE, json.dumps(spec.to_json_dict(), indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(f"no space left on the device of {str(out)!r}: nothing written") from None
            raise
        rows: dict[int, dict] = {}
        todo: list[int] = []
        for i in range(spec.count):
            row = read_row(out, i) if resume else None
            if row is not None and verify_sample(out, i, spec.spec_hash, row=row) is None:
                rows[i] = row
            else:
                todo.append(i)
        skipped = len(rows)
        failed: dict[int, str] = {}
        disk_full: BaseException | None = None
        with _Progress(spec.count, skipped, quiet, spec.name) as prog:
            if skipped:
                prog.note(f"resuming: {skipped} of {spec.count} samples already made and verified")

            def done(row: dict, running: int) -> None:
                rows[row["index"]] = row
                prog.sample(row, running)
                if on_sample is not None:
                    on_sample(row)

            try:
                if not todo:
                    pass
                elif workers == 0 and scheduler is None:
                    for i in todo:
                        try:
                            done(run_sample(spec, i, out), 0)
                        except DiskFullError as exc:
                            disk_full = exc
                            break
                        except XrmInputError as exc:
                            failed[i] = str(exc)
                        except Exception as exc:  # noqa: BLE001 - reported per sample, as on Dask
                            failed[i] = f"{type(exc).__name__}: {exc}"
                else:
                    disk_full = _run_distributed(spec, out, todo, workers, scheduler, connect_timeout_s,
                                                 retries, done, failed)
            finally:
                cleanup_temporaries(out)
        made = len(rows) - skipped
        all_rows = [rows[i] for i in sorted(rows)]
        manifest = None
        with contextlib.suppress(OSError):
            manifest = write_manifest(out, all_rows)
        if disk_full is not None:
            raise DiskFullError(f"no space left on the device of {str(out)!r}: stopped cleanly after "
                                f"{len(rows)} of {spec.count} samples (no partial files kept); free "
                                f"space and run again to resume. ({disk_full})")
        if figure and all_rows:
            try:
                summary_figure(all_rows, out / FIGURE, title=spec.name)
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFullError(f"no space left on the device of {str(out)!r} writing "
                                        f"{FIGURE}; every sample is complete") from None
                raise
        wall = time.perf_counter() - t0
        result = {"count": spec.count, "made": made, "skipped": skipped, "failed": failed,
                  "manifest": str(manifest) if manifest else None, "wall_s": wall,
                  "samples_per_hour": made / wall * 3600.0 if made and wall > 0 else 0.0,
                  "spec_hash": spec.spec_hash}
        if failed:
            lines = "\n".join(f"  sample {i}: {m}" for i, m in sorted(failed.items()))
            raise DatasetError(f"{len(failed)} of {spec.count} samples failed (the others are "
                               f"written; rerun to retry):\n{lines}")
        if verify:
            bad = verify_dataset(out, spec.spec_hash, spec.count)
            if bad:
                lines = "\n".join(f"  sample {i}: {why}" for i, why in bad)
                raise DatasetError(f"--verify: {len(bad)} samples do not match the manifest:\n{lines}")
            result["verified"] = spec.count
        return result


def _run_distributed(spec, out: Path, todo: list[int], workers, scheduler, connect_timeout_s,
                     retries, done, failed) -> BaseException | None:
    from distributed import as_completed

    disk_full = None
    if scheduler is None:  # no more worker processes than samples to make
        workers = min(int(workers if workers is not None else os.cpu_count() or 1), len(todo))
    with dask_client(spec, workers=workers, scheduler=scheduler,
                     connect_timeout_s=connect_timeout_s) as client:
        futures = [client.submit(run_sample, spec, i, str(out.resolve()), pure=False, retries=retries,
                                 key=f"xrm-sample-{spec.spec_hash[:12]}-{i:06d}-{os.getpid()}")
                   for i in todo]
        index_of = {f.key: i for f, i in zip(futures, todo)}
        running = len(futures)
        try:
            for fut in as_completed(futures):
                running -= 1
                i = index_of[fut.key]
                try:
                    row = fut.result()
                except DiskFullError as exc:
                    disk_full = exc
                    break
                except XrmInputError as exc:
                    failed[i] = str(exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - KilledWorker, bugs: report per sample
                    if is_disk_full(exc):
                        disk_full = exc
                        break
                    failed[i] = f"{type(exc).__name__}: {exc}"
                    continue
                done(row, running)
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                client.cancel(pending, force=True)
                # let running tasks reach their own clean-up before the scratch folder goes
                with contextlib.suppress(Exception):
                    from distributed import wait

                    wait(pending, timeout=30)
    return disk_full


# ----------------------------------------------------------------------------- figure

def summary_figure(rows: list[Mapping[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Histograms of every drawn parameter (numbers) or bar charts (choices), plus splits."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    keys = sorted({k for r in rows for k in r.get("params", {}) if k != "seed"})
    panels = keys + ["split"]
    ncol = min(4, len(panels))
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.5 * nrow), squeeze=False)
    for ax, key in zip(axes.ravel(), panels):
        vals = [r["split"] if key == "split" else r.get("params", {}).get(key) for r in rows]
        vals = [v for v in vals if v is not None]
        numeric = vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        if numeric and len(set(vals)) > 6:
            ax.hist(np.asarray(vals, float), bins=min(30, max(5, len(vals) // 3)), color="#4878a8")
        else:
            def name(v):
                return v if isinstance(v, str) else json.dumps(v)

            uniq = {name(v): v for v in vals}
            labels = sorted(uniq, key=lambda s: (0, uniq[s], s) if numeric else (1, 0, s))
            counts = [sum(1 for v in vals if name(v) == lbl) for lbl in labels]
            ax.bar(range(len(labels)), counts, color="#d08040")
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=30, fontsize=7)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{title}: {len(rows)} samples", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        fig.savefig(tmp, dpi=90, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
