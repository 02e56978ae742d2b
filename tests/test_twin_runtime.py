"""Taichi kernels do not keep their first call's arrays alive (twin.runtime.releasing)."""

import gc
import weakref

import numpy as np
import pytest


def _fresh_kernel(wrapped: bool):
    import taichi as ti

    from twin import runtime

    if runtime.current_arch() is None:
        runtime.init_taichi("cpu")

    @ti.kernel
    def add_one(a: ti.types.ndarray(dtype=ti.f32, ndim=1)):
        for i in a:
            a[i] += 1.0

    return runtime.releasing(add_one) if wrapped else add_one


@pytest.mark.parametrize("wrapped", [True, False])
def test_an_array_passed_to_the_compiling_call_is_freed_with_its_last_reference(wrapped):
    k = _fresh_kernel(wrapped)
    gc.collect()
    gc.disable()  # only reference counting frees from here
    try:
        a = np.zeros(1000, np.float32)
        k(a)
        assert np.all(a == 1.0)
        ref = weakref.ref(a)
        del a
        alive = ref() is not None
    finally:
        gc.enable()
    # with the wrapper the array is gone at once; without it, Taichi's compiler context keeps
    # it (the reason for the wrapper: if Taichi stops doing so, this test says the wrapper can go)
    assert alive is (not wrapped)


def test_a_compile_for_a_new_template_value_also_frees_its_arrays():
    # the distance transform's kernel compiles once per (axis, with_feat, black): the arrays
    # kinds repeat, the template values do not (the case that kept 0.875 volumes alive)
    import taichi as ti

    from twin import runtime

    if runtime.current_arch() is None:
        runtime.init_taichi("cpu")

    @ti.kernel
    def add(a: ti.types.ndarray(dtype=ti.f32, ndim=1), step: ti.template()):
        for i in a:
            a[i] += step

    k = runtime.releasing(add)
    k(np.zeros(4, np.float32), 1)  # compiles for step = 1
    gc.collect()
    gc.disable()
    try:
        a = np.zeros(1000, np.float32)
        k(a, 2)  # same kind of array, new template value: compiles again
        assert np.all(a == 2.0)
        ref = weakref.ref(a)
        del a
        alive = ref() is not None
    finally:
        gc.enable()
    assert not alive


def test_later_calls_run_the_kernel_and_return_its_result():
    k = _fresh_kernel(True)
    a = np.zeros(10, np.float32)
    for _ in range(3):
        k(a)
    assert np.all(a == 3.0)


def test_the_first_spectral_sum_of_a_process_does_not_keep_its_path_lengths():
    """The case that was measured: in a fresh process, the path lengths passed to the spectral
    kernel's compiling call stayed allocated through a whole simulation (140 MiB of the
    quickstart's peak), because the compiler's context stays reachable past the call. With
    gc disabled, dropping the last reference must free them."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import gc, weakref
        import numpy as np
        from twin.runtime import init_taichi
        from twin.spectral import spectral_sums
        init_taichi("cpu")
        gc.disable()
        lengths = np.full((2, 3, 8, 8), 0.5, np.float32)
        mu = np.ones((3, 5), np.float32)
        w = np.ones((2, 5), np.float32)
        sums = spectral_sums(lengths, mu, w, arch="cpu")
        # the sums are right: exp(-3 * 0.5) per bin, 5 bins, weight 1
        assert np.allclose(sums, 5 * np.exp(-1.5), rtol=1e-6), sums.ravel()[:3]
        ref = weakref.ref(lengths)
        del lengths
        print("ALIVE" if ref() is not None else "FREED")
    """)
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "FREED"
