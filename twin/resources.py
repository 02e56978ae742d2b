"""Size, memory and time of a scan before it runs (so a run that cannot fit is refused early).

The estimates are arithmetic on the scenario: detector pixels, views, phantom grids and the
reconstructed volume. Times use throughputs measured by ``python -m bench`` on a 2-core CPU
(``docs/benchmarks.md``); on another machine they are only an order of magnitude.
"""

from __future__ import annotations

import math
import os
from typing import Any

from twin.scenario import ScanSpec

#: Ray samples (voxel steps) per second of the label-volume projector, 2 CPU cores.
CPU_RAY_SAMPLES_PER_S = 5.0e7
#: Voxel updates per second of FDK backprojection, 2 CPU cores.
CPU_VOXEL_UPDATES_PER_S = 3.0e8
BYTES_LABEL = 1
#: Peak memory of the ``measure`` stage in float32 volumes of the reconstruction, the volume
#: itself included: 3.81, 3.82 and 4.01 volumes above its input at 256^3, 384^3 and 512^3 crops
#: of the unaged nimh-zoom, ``bench/bench_measure_memory.py``, 2026-12-03
#: (bench/results/measure_memory_2026-12-03.json), plus a volume of margin.
#: The undenoised volume, when kept, and the truth come on top.
MEASURE_PEAK_VOLUMES = 6.0
#: The same when the truth holds cracks: the planar-crack search (an FFT filter bank over the
#: whole volume, :mod:`recon.plane_filter`) is then the stage's peak, 4.92, 4.80 and 4.78
#: volumes above the input at 256^3, 384^3 and 512^3 crops of the 120-cycle cell on a crack
#: (same bench, ``--cycles 120 --center-mm 2.28,0.98,10.62``, 2026-12-03), plus the volume
#: and a margin of 1.1 (was 10.5 when the search needed 8.8).
MEASURE_PEAK_VOLUMES_CRACKS = 7.0


def searches_cracks(spec: ScanSpec) -> bool:
    """Whether the scenario's phantom can hold cracks (the measurement then searches for them:
    :meth:`phantoms.base.Phantom.defect_kinds`). Parts scenes hold no defects."""
    if spec.phantom["kind"] == "parts":
        return False
    import phantoms
    from twin.plan import PHANTOM_COMMON_KEYS, phantom_seed

    params = {k: v for k, v in spec.phantom.items() if k not in PHANTOM_COMMON_KEYS}
    return "crack" in phantoms.build(spec.phantom["kind"], params, seed=phantom_seed(spec)).defect_kinds()


def available_bytes() -> int:
    """Physical memory of this machine (or ``XRM_TWIN_MAX_BYTES``)."""
    if os.environ.get("XRM_TWIN_MAX_BYTES"):
        return int(os.environ["XRM_TWIN_MAX_BYTES"])
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return 16 * 2 ** 30


def estimate(spec: ScanSpec, *, cracks: bool | None = None) -> dict[str, Any]:
    """Sizes (bytes), ray samples and CPU time estimates of a scenario.

    Returns
    -------
    dict with ``projections_bytes`` (uint16 on disk), ``recon_input_bytes`` (float32 line
    integrals held by the reconstruction), ``volume_bytes``, ``phantom_bytes``,
    ``measure_bytes`` (segmentation and metrology of the volume), ``peak_bytes`` (the largest
    stage), ``ray_samples``, ``voxel_updates``,
    ``cpu_time_s`` (simulate + reconstruct, 2 cores).
    """
    from twin.plan import phantom_voxel_um, resolve_geometry

    g = resolve_geometry(spec)
    d = spec.detector
    frames = g.n_views + int(d["flats"]) + int(d["darks"])
    pix = g.rows * g.cols
    proj_bytes = frames * pix * 2
    recon_in = g.n_views * pix * 4
    n_xy = g.cols
    volume_bytes = n_xy * n_xy * g.rows * 4
    phantom_bytes = 0
    grid_n = n_xy
    if spec.phantom["kind"] == "parts":
        # the truth of the parts (twin.parts_truth): at most the reconstructed box at the
        # phantom voxel, one byte a voxel (uint8 up to 255 parts)
        vox_um = phantom_voxel_um(spec, g)
        n_xy_t = math.ceil(g.cols * g.voxel_size_um / vox_um - 1e-9)
        phantom_bytes = n_xy_t * n_xy_t * math.ceil(g.rows * g.voxel_size_um / vox_um - 1e-9) * BYTES_LABEL
    else:
        vox_um = phantom_voxel_um(spec, g)
        voi = spec.phantom.get("voi")
        if voi:
            n = [max(1, math.ceil(s * 1000 / vox_um)) for s in voi["size_mm"]]
            phantom_bytes = n[0] * n[1] * n[2] * BYTES_LABEL
            grid_n = max(n)
        else:
            fov = g.field_of_view_mm
            n = [math.ceil(fov[0] * 1000 / vox_um)] * 2 + [math.ceil(fov[1] * 1000 / vox_um)]
            phantom_bytes = n[0] * n[1] * n[2] * BYTES_LABEL
            grid_n = max(n)
    ss = spec.geometry["supersample"]
    if not isinstance(ss, int):
        ss = 1 if spec.phantom["kind"] == "parts" else int(min(8, max(1, math.ceil(
            g.voxel_size_um / phantom_voxel_um(spec, g) - 1e-6))))
    ray_samples = g.n_views * pix * ss * ss * grid_n * 1.3
    voxel_updates = g.n_views * n_xy * n_xy * g.rows
    denoised = str(spec.recon.get("denoise", "none")).lower() not in ("none", "")
    if cracks is None:
        cracks = searches_cracks(spec)
    per_volume = MEASURE_PEAK_VOLUMES_CRACKS if cracks else MEASURE_PEAK_VOLUMES
    measure_bytes = int(per_volume * volume_bytes + (volume_bytes if denoised else 0) + phantom_bytes)
    peak = max(proj_bytes // 2 + recon_in + volume_bytes, phantom_bytes * 3 + 256 * 2 ** 20, measure_bytes)
    return {"projections_bytes": proj_bytes, "recon_input_bytes": recon_in, "volume_bytes": volume_bytes,
            "phantom_bytes": phantom_bytes, "measure_bytes": measure_bytes, "peak_bytes": peak,
            "ray_samples": ray_samples,
            "voxel_updates": voxel_updates,
            "cpu_time_s": ray_samples / CPU_RAY_SAMPLES_PER_S + voxel_updates / CPU_VOXEL_UPDATES_PER_S}


def gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


def check_fits(spec: ScanSpec, *, cracks: bool | None = None) -> dict[str, Any]:
    """Raise :class:`XrmInputError` when the scan's peak memory exceeds this machine's.

    ``cracks``: whether the truth holds cracks, when known (a resolved plan's truth); by
    default :func:`searches_cracks` decides from the scenario."""
    from twin.errors import XrmInputError

    est = estimate(spec, cracks=cracks)
    have = available_bytes()
    if est["peak_bytes"] > 0.85 * have:
        raise XrmInputError(
            f"scenario {spec.name!r} at full scale needs about {gib(est['peak_bytes'])} of memory "
            f"(projections {gib(est['recon_input_bytes'])} as float32, volume {gib(est['volume_bytes'])}, "
            f"phantom grid {gib(est['phantom_bytes'])}, measurement {gib(est['measure_bytes'])}) and about {est['cpu_time_s'] / 3600:.1f} h on 2 CPU "
            f"cores; this machine has {gib(have)}. Run it with --preview, or on a larger machine / GPU.")
    return est
