"""The GPU code paths, run on a device that is not the host: Taichi's Vulkan backend on Mesa's
software Vulkan (lavapipe) stands in for CUDA (``XRM_TWIN_GPU_STAND_IN=vulkan``,
:mod:`twin.runtime`).

With the stand-in, ``current_arch()`` says ``"cuda"``, so what only a GPU node runs is taken:
the device-resident projections and zero-filled volume of the backprojector, the overlapped
detector read-out, the Taichi non-local means (scikit-image on a CPU), the measure kernels'
device scratch sizes. Each check compares with the CPU backend in another process (Taichi
picks its backend once per process) against the tolerance issue 2 sets for CPU vs CUDA
(1e-4), so a mistake in a GPU-only branch (a copy that is missing, a batch off by one)
fails here instead of on a lent GPU's clock. Times on the stand-in mean nothing.

Not checked here: the mesh rasteriser (``twin.projector._raster_mesh``). Taichi 1.7.4's Vulkan
backend on lavapipe drops the last work items of a parallel loop whose body runs an inner
``range`` with per-item bounds (24 x 100 items with ``range(f % 5, f % 5 + 4)`` inside: 2352
run, the CPU runs all 2400); the rasteriser's scan lines are such loops, so on the stand-in it
loses most hits. That is the stand-in's defect, not the kernel's (on the CPU, with every GPU
branch of the code taken, the projections are the same bytes): the mesh path's CPU-vs-CUDA
check stays with ``bench/gpu_check.py`` on a real GPU.

Skips where no Vulkan device starts (``apt-get install mesa-vulkan-drivers``), unless
``XRM_TWIN_REQUIRE_VULKAN=1`` (CI, which installs it: there a skip would hide a missing
library).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def _env(stand_in: bool) -> dict:
    env = dict(os.environ)
    env.pop("XRM_TWIN_GPU_STAND_IN", None)
    if stand_in:
        env["XRM_TWIN_GPU_STAND_IN"] = "vulkan"
    return env


@pytest.fixture(scope="module")
def vulkan():
    probe = subprocess.run([sys.executable, "-c", "from twin.runtime import init_taichi, current_arch; "
                            "init_taichi('cuda'); print(current_arch())"],
                           capture_output=True, text=True, env=_env(True), cwd=ROOT)
    if probe.returncode != 0 or probe.stdout.strip() != "cuda":
        if os.environ.get("XRM_TWIN_REQUIRE_VULKAN", "") not in ("", "0"):
            pytest.fail(f"XRM_TWIN_REQUIRE_VULKAN is set but the Vulkan stand-in did not start:\n"
                        f"{probe.stdout}\n{probe.stderr}")
        pytest.skip("no Vulkan device (apt-get install mesa-vulkan-drivers)")
    return True


def test_kernels_agree_with_the_cpu(vulkan):
    """bench/gpu_check.py's agreement step at 48^3 (path lengths, FDK in float32 and float16,
    distance transforms, local thickness, non-local means), CPU vs the stand-in."""
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_check

    old = os.environ.get("XRM_TWIN_GPU_STAND_IN")
    os.environ["XRM_TWIN_GPU_STAND_IN"] = "vulkan"  # the workers inherit it; "cpu" ignores it
    try:
        res = gpu_check.agreement(48, ("cpu", "cuda"))
    finally:
        if old is None:
            os.environ.pop("XRM_TWIN_GPU_STAND_IN")
        else:
            os.environ["XRM_TWIN_GPU_STAND_IN"] = old
    for key in ("path_lengths", "fdk", "fdk_float16", "local_thickness_um", "nl_means"):
        assert res[f"{key}_max_rel_diff"] <= 1e-4, (key, res)
    assert res["edt_squared_equal"] and res["nearest_feature_equal"], res


def _voxel_scenario(folder: Path) -> Path:
    """A steel tube around an aluminium rod as a 64^3 label grid (a voxel part: the stand-in
    cannot check the mesh rasteriser, see the module docstring)."""
    from twin.materials import get_material
    from twin.truth_io import write_truth
    from twin.volume import LabelGrid

    n = 64
    z, y, x = np.ogrid[:n, :n, :n]
    r2 = (x - 31.5) ** 2 + (y - 31.5) ** 2 + 0 * z
    lab = np.zeros((n, n, n), np.uint8)
    lab[r2 < 28 ** 2] = 1
    lab[r2 < 23 ** 2] = 0
    lab[r2 < 14 ** 2] = 2
    lab[:4] = lab[-4:] = 0
    write_truth(folder / "cell.h5", LabelGrid(lab, 30.0, (-0.96, -0.96, -0.96),
                                              tuple(get_material(m) for m in ("air", "SS304", "Al")),
                                              ("air", "tube", "rod")))
    toml = (DATA / "small_parts.toml").read_text()
    toml = toml[:toml.index("[[phantom.parts]]")] + '[[phantom.parts]]\nshape = "labels"\nfile = "cell.h5"\n'
    (folder / "cell.toml").write_text(toml)
    return folder / "cell.toml"


def _simulate_and_reconstruct(scenario: Path, out: Path, stand_in: bool) -> None:
    env = _env(stand_in)
    arch = "cuda" if stand_in else "cpu"
    base = [sys.executable, "-m", "twin.cli", "--quiet"]
    subprocess.run(base + ["simulate", str(scenario), "--out", str(out), "--arch", arch,
                           "--set", "detector.ideal=true", "--set", "geometry.projections=24"],
                   check=True, env=env, cwd=ROOT, capture_output=True)
    subprocess.run(base + ["reconstruct", str(out), "--out", str(out), "--arch", arch,
                           "--set", "denoise={method='nlm', kernel_size=7}"],
                   check=True, env=env, cwd=ROOT, capture_output=True)


def test_simulate_and_reconstruct_agree_with_the_cpu(vulkan, tmp_path):
    """The CLI end to end on the stand-in (chunked tracing of a label grid with the read-out
    overlapped, the device-resident backprojection, the Taichi non-local means) against the
    CPU: noiseless projections and the reconstruction within 1e-4 of their largest value, the
    denoised volume within 1e-5 of the same filter's on the CPU."""
    scenario = _voxel_scenario(tmp_path)
    _simulate_and_reconstruct(scenario, tmp_path / "cpu", False)
    _simulate_and_reconstruct(scenario, tmp_path / "dev", True)
    key = "entry/instrument/detector/data"
    with h5py.File(tmp_path / "cpu" / "projections.h5") as a, h5py.File(tmp_path / "dev" / "projections.h5") as b:
        pa, pb = a[key][...].astype(np.float64), b[key][...].astype(np.float64)
    assert pa.shape == pb.shape and np.ptp(pa) > 0
    assert np.abs(pa - pb).max() <= 1e-4 * np.abs(pa).max()
    with h5py.File(tmp_path / "cpu" / "recon.h5") as a, h5py.File(tmp_path / "dev" / "recon.h5") as b:
        va, vb = a["volume"][...], b["volume"][...]
        ua, ub = a["volume_undenoised"][...], b["volume_undenoised"][...]
    assert va.shape == vb.shape and ua.max() > 0.05  # the steel tube is there
    assert np.abs(ua - ub).max() <= 1e-4 * np.abs(ua).max()
    # the denoiser, on the device (Taichi) and here (the same kernels on the CPU) from the
    # device's own input: NL-means' weight cut-off makes it jump where its input moves by
    # 1e-5 (the CPU run's input), so it is compared on the same input
    from recon.denoise import nl_means

    ref = nl_means(ub, kernel_size=7, backend="taichi")
    assert np.abs(vb - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.abs(va - vb).mean() <= 1e-5 * np.abs(va).max()  # and close to the CPU's on average
