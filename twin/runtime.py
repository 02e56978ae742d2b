"""The one place that initialises Taichi.

``init_taichi("auto")`` takes CUDA where there is one and falls back to the CPU with a
notice; ``"cuda"`` without a GPU is an error. Calling it again with the same arch is free;
asking for another arch after initialisation re-initialises Taichi (kernels recompile).
"""

from __future__ import annotations

import logging
import os

import numpy as np

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


#: Developer setting: with ``XRM_TWIN_GPU_STAND_IN=vulkan`` a request for CUDA initialises
#: Taichi's Vulkan backend instead (on a machine without an NVIDIA GPU, Mesa's software Vulkan
#: device, lavapipe: ``apt-get install mesa-vulkan-drivers``) and :func:`current_arch` says
#: ``"cuda"``, so every GPU code path (device-resident arrays, batches, overlapped read-out,
#: the Taichi denoiser) runs on a device that is not the host. For checking those paths
#: before a GPU is lent: its results are checked, its times mean nothing.
GPU_STAND_IN_ENV = "XRM_TWIN_GPU_STAND_IN"


def gpu_stand_in() -> bool:
    """True when Taichi runs on the Vulkan stand-in for CUDA (:data:`GPU_STAND_IN_ENV`)."""
    if _current != "cuda":
        return False
    import taichi as ti

    return ti.lang.impl.current_cfg().arch == ti.vulkan


def _stand_in_gpu() -> bool:
    """Initialise the Vulkan stand-in for CUDA when :data:`GPU_STAND_IN_ENV` asks for it."""
    import taichi as ti

    want = os.environ.get(GPU_STAND_IN_ENV)
    if not want:
        return False
    if want != "vulkan":
        raise XrmInputError(f"{GPU_STAND_IN_ENV} must be 'vulkan', got {want!r}")
    try:
        _quiet_init(arch=ti.vulkan, offline_cache=True, log_level=ti.ERROR, default_fp=ti.f32,
                    random_seed=0)
    except Exception as exc:  # noqa: BLE001
        raise XrmInputError(f"{GPU_STAND_IN_ENV}=vulkan: Taichi's Vulkan backend did not start "
                            f"({exc})") from exc
    if ti.lang.impl.current_cfg().arch != ti.vulkan:
        raise XrmInputError(f"{GPU_STAND_IN_ENV}=vulkan: no Vulkan device (install "
                            "mesa-vulkan-drivers for the software one)")
    _log.warning("%s=vulkan: Taichi runs on Vulkan in place of CUDA (a check of the GPU code "
                 "paths; its times mean nothing)", GPU_STAND_IN_ENV)
    return True


def _cuda_available() -> bool:
    import taichi as ti

    if _stand_in_gpu():
        return True
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
    _STAND_INS.clear()  # ndarrays of a previous runtime
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


def kernels_once(build):
    """Decorator for a module's kernel builder: ``build()`` (defining Taichi kernels, returning
    them by name in a dict) runs once, on first use, after Taichi is initialised (on the CPU
    when nobody has initialised it). Kernels are defined lazily so that importing a module
    does not start Taichi.
    """
    import functools

    cache: dict = {}

    @functools.wraps(build)
    def get() -> dict:
        if not cache:
            if _current is None:
                init_taichi("cpu")
            cache.update(build())
        return cache

    return get


def releasing(kernel):
    """``kernel`` (a Taichi kernel), wrapped so that compiling it does not keep its arguments.

    Taichi compiles a kernel on its first call for each kind of argument (dtype, number of
    dimensions) and each value of its ``ti.template()`` arguments, and the compiler's context
    refers to that call's arguments. The context is a reference cycle, and it stays reachable
    for a while after the call (the compiled kernel refers to it until some later compile),
    so a collection run right after the call does not free it either: the first chunk's
    path lengths of a simulation (140 MiB of the quickstart's 392 MiB peak) and the
    distance transform's feature volumes (0.875 of a volume in the crack search's peak)
    stayed allocated long after their callers let them go.

    The wrapper compiles each new kind of call on stand-ins first: every numpy array (and
    scalar Taichi ndarray) argument replaced by a one-element array of its dtype and number of
    dimensions, which is all the compiler reads of it (through Taichi's
    ``_primal.ensure_compiled``); the real call then finds the kernel compiled and only runs
    it. Where that cannot be done (keyword arguments, another Taichi version), the collector
    runs after every call that compiled (the kernel's table of compiled instances grew).
    """
    import functools
    import gc

    primal = getattr(kernel, "_primal", None)
    compiled = getattr(primal, "compiled_kernels", None)
    precompile = getattr(primal, "ensure_compiled", None)
    if not isinstance(compiled, dict):
        compiled = None

    seen: set = set()

    def kind(a):
        dtype = getattr(a, "dtype", None)
        if dtype is not None:
            return (type(a).__name__, str(dtype), getattr(a, "ndim", None))
        return (type(a).__name__, a) if isinstance(a, (bool, str)) else type(a).__name__

    @functools.wraps(kernel)
    def call(*args, **kwargs):
        if compiled is None:  # no table to watch: collect after each new kind of call
            key = (tuple(kind(a) for a in args), tuple((k, kind(v)) for k, v in sorted(kwargs.items())))
            out = kernel(*args, **kwargs)
            if key not in seen:
                seen.add(key)
                gc.collect()
            return out
        if precompile is not None and not kwargs:
            try:
                precompile(*[_stand_in(a) for a in args])
            except Exception:  # noqa: BLE001 - the real call compiles and reports it
                pass
        before = len(compiled)
        out = kernel(*args, **kwargs)
        if len(compiled) != before:  # compiled on the real arguments after all
            gc.collect()
        return out

    return call


def _stand_in(a):
    """A one-element array like ``a`` (numpy or scalar Taichi ndarray), else ``a`` itself."""
    if isinstance(a, np.ndarray):
        return np.zeros((1,) * a.ndim, a.dtype)
    try:
        from taichi.lang._ndarray import ScalarNdarray
    except ImportError:  # pragma: no cover - another Taichi layout
        return a
    if isinstance(a, ScalarNdarray):
        import taichi as ti

        # one stand-in per kind, kept: creating a Taichi ndarray records a stack trace
        # (about 0.3 ms), and the distance transform's passes take four of them per call
        key = (str(a.dtype), len(a.shape))
        if key not in _STAND_INS:
            _STAND_INS[key] = ti.ndarray(a.dtype, (1,) * len(a.shape))
        return _STAND_INS[key]
    return a


#: the one-element Taichi ndarrays :func:`_stand_in` hands to the compiler, by (dtype, ndim)
_STAND_INS: dict = {}
