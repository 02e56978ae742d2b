"""The one place that initialises Taichi.

``init_taichi("auto")`` takes CUDA where there is one and falls back to the CPU with a
notice; ``"cuda"`` without a GPU is an error. Calling it again with the same arch is free;
asking for another arch after initialisation re-initialises Taichi (kernels recompile).
"""

from __future__ import annotations

import logging
import os

from twin.errors import XrmInputError

ARCHES = ("auto", "cpu", "cuda")
_log = logging.getLogger("xrm_twin")
_current: str | None = None


def _quiet_init(**kwargs) -> None:
    """``ti.init`` without its "Starting on arch" print (logged at debug level instead)."""
    import contextlib
    import io

    import taichi as ti

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ti.init(**kwargs)
    if buf.getvalue().strip():
        _log.debug(buf.getvalue().strip())


def _cuda_available() -> bool:
    import taichi as ti

    try:
        _quiet_init(arch=ti.cuda, offline_cache=True, log_level=ti.ERROR)
    except Exception:
        return False
    return ti.lang.impl.current_cfg().arch == ti.cuda


def init_taichi(arch: str = "auto", *, cpu_threads: int | None = None) -> str:
    """Initialise Taichi once; return the arch in use (``"cpu"`` or ``"cuda"``).

    Parameters
    ----------
    arch : {"auto", "cpu", "cuda"}
    cpu_threads : int, optional
        CPU worker threads (default: all cores, or ``XRM_TWIN_THREADS``).
    """
    global _current
    if arch not in ARCHES:
        raise XrmInputError(f"--arch must be one of {', '.join(ARCHES)}, got {arch!r}")
    if _current is not None and (arch == "auto" or arch == _current):
        return _current
    import taichi as ti

    if cpu_threads is None and os.environ.get("XRM_TWIN_THREADS"):
        cpu_threads = int(os.environ["XRM_TWIN_THREADS"])
    common = dict(offline_cache=True, log_level=ti.ERROR, default_fp=ti.f32, random_seed=0)
    if arch in ("auto", "cuda"):
        if _cuda_available():
            _current = "cuda"
            return _current
        if arch == "cuda":
            raise XrmInputError("--arch cuda was asked for but no CUDA device is available "
                                "(use --arch cpu or --arch auto)")
        if os.environ.get("XRM_TWIN_QUIET_ARCH") is None:
            _log.info("no CUDA device found: running Taichi kernels on the CPU")
    kwargs = dict(common)
    if cpu_threads:
        kwargs["cpu_max_num_threads"] = int(cpu_threads)
    _quiet_init(arch=ti.cpu, **kwargs)
    _current = "cpu"
    return _current


def host_threads() -> int:
    """Worker threads for host-side (numpy / scikit-image / edt) parallel loops.

    ``XRM_TWIN_THREADS`` when set, else the cores this process may run on.
    """
    env = os.environ.get("XRM_TWIN_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def current_arch() -> str | None:
    """The arch Taichi was initialised with, or None."""
    return _current


def releasing(kernel):
    """``kernel`` (a Taichi kernel), wrapped so that compiling it does not keep its arguments.

    Taichi compiles a kernel on its first call for each kind of argument (dtype, number of
    dimensions) and each value of its ``ti.template()`` arguments, and the compiler's context,
    which refers to that call's arguments, is freed only by Python's cyclic garbage collector:
    a 1 GiB array passed to a compiling call stayed allocated long after the caller let it go
    (measured: the distance transform's two feature volumes of the segmentation, 0.875 of a
    float32 volume, were still alive in the crack search's filter bank, its memory peak).
    The wrapper runs the collector after every call that compiled: it sees the kernel's table
    of compiled instances grow (Taichi's ``_primal.compiled_kernels``); where a Taichi version
    has no such table, after the first call of each kind of argument and template value.
    """
    import functools
    import gc

    primal = getattr(kernel, "_primal", None)
    compiled = getattr(primal, "compiled_kernels", None)
    seen: set = set()

    def kind(a):
        dtype = getattr(a, "dtype", None)
        if dtype is not None:
            return (type(a).__name__, str(dtype), getattr(a, "ndim", None))
        return (type(a).__name__, a) if isinstance(a, (bool, str)) else type(a).__name__

    @functools.wraps(kernel)
    def call(*args, **kwargs):
        if isinstance(compiled, dict):
            before = len(compiled)
            out = kernel(*args, **kwargs)
            if len(compiled) != before:
                gc.collect()
            return out
        key = (tuple(kind(a) for a in args), tuple((k, kind(v)) for k, v in sorted(kwargs.items())))
        out = kernel(*args, **kwargs)
        if key not in seen:
            seen.add(key)
            gc.collect()
        return out

    return call
