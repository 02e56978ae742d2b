"""Run a CTSimU scenario: projections as TIFF + ``<name>_metadata.json`` + NXtomo.

Per view: per-material path lengths (the xrm-twin projector, explicit vectors) -> deposited
energy ``E = Omega * t * sum_E N(E) eta(E) E T_front(E) exp(-sum_m mu_m L_m)`` (keV per
pixel; ``eta = 1`` for an ideal detector, ``1 - exp(-mu_s d)`` for a real one; ``Omega`` the
exact solid angle of the pixel rectangle seen from the spot) -> focal-spot and detector
blur (Gaussians) -> grey value (linear ``factor``/``offset`` or the imin/imax method, where
imax is the brightest free-beam pixel of the first frame) -> Gaussian noise from
``snr_at_imax`` -> uint16 (bit depth <= 16) or float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from twin.atomic import atomic_path, write_text_atomic
from twin.ctsimu.reader import KEV_TO_J, CtsimuScenario
from twin.ctsimu.unsharpness import sigma_for_srb_mm, srb_shortfall_note
from twin.errors import XrmInputError
from twin.filters import stack_transmission
from twin.spectral import prune_bins, spectral_sums

#: Distance (mm) that defines the solid angle of a parallel-beam pixel (flux per area).
PARALLEL_REFERENCE_MM = 1000.0
VIEWS_PER_CHUNK_BYTES = 128 * 2 ** 20


def pixel_solid_angles_sr(vector: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Exact solid angle (sr) of each pixel rectangle seen from the source, (rows, cols).

    ``vector`` is one cone-beam view (12,). Uses ``Omega = sum +-atan(x y / (h R))`` over the
    pixel corners in the detector plane, relative to the foot of the perpendicular from the
    source (``h`` its length, ``R`` the corner distance).
    """
    s, d, u, v = vector[0:3], vector[3:6], vector[6:9], vector[9:12]
    pu, pv = np.linalg.norm(u), np.linalg.norm(v)
    eu, ev = u / pu, v / pv
    n = np.cross(eu, ev)
    h = abs(float((s - d) @ n))
    fu, fv = float((s - d) @ eu), float((s - d) @ ev)
    xu = (np.arange(cols + 1) - cols / 2.0) * pu - fu
    yv = (np.arange(rows + 1) - rows / 2.0) * pv - fv
    x, y = np.meshgrid(xu, yv)
    f = np.arctan(x * y / (h * np.sqrt(h * h + x * x + y * y)))
    return f[1:, 1:] - f[:-1, 1:] - f[1:, :-1] + f[:-1, :-1]


def spectral_weights(sc: CtsimuScenario) -> tuple[np.ndarray, np.ndarray]:
    """Energies (keV) and deposited-energy weights (keV per sr per frame) of the kept bins."""
    spec = sc.spectrum
    e = spec.energy_kev
    n = spec.photons_per_s_sr * stack_transmission(sc.detector.front_layers, e)
    det = sc.detector
    eta = np.ones_like(e) if det.ideal else -np.expm1(-det.scintillator.mu_per_mm(e) * det.scintillator_mm)
    w = n * eta * e * det.integration_time_s
    keep = prune_bins(w[None])
    return e[keep], w[keep]


def magnification(sc: CtsimuScenario) -> float:
    """Magnification of the stage centre (source-detector over source-stage distance)."""
    if sc.beam == "parallel" or sc.source_object_mm <= 0:
        return 1.0
    return sc.source_detector_mm / sc.source_object_mm


def spot_blur_sigma_px(sc: CtsimuScenario) -> tuple[float, float]:
    """Focal-spot penumbra at the detector, Gaussian sigma (rows, columns) in pixels.

    The spot's covariance projected on the detector axes scaled by (M - 1) with M of the
    stage centre (exact for objects at the stage centre; documented approximation else).
    """
    m1 = max(magnification(sc) - 1.0, 0.0)
    cov = sc.spot_cov_mm2 * m1 * m1
    return float(np.sqrt(cov[0, 0]) / sc.pitch_v_mm), float(np.sqrt(cov[1, 1]) / sc.pitch_u_mm)


def detector_blur_sigma_px(sc: CtsimuScenario) -> tuple[float, float]:
    """Detector PSF from the basic spatial resolution, Gaussian sigma (rows, columns) in px.

    ``sigma`` is chosen per axis so that the detector (this Gaussian and pixels of that
    axis' pitch) shows the scenario's SRb on a duplex-wire IQI
    (:func:`twin.ctsimu.unsharpness.sigma_for_srb_mm`; ``docs/ctsimu.md``).
    """
    srb = sc.detector.srb_mm
    if not srb:
        return 0.0, 0.0
    return (sigma_for_srb_mm(srb, sc.pitch_v_mm) / sc.pitch_v_mm,
            sigma_for_srb_mm(srb, sc.pitch_u_mm) / sc.pitch_u_mm)


def unsharpness_notes(sc: CtsimuScenario) -> list[str]:
    """Notes for an SRb finer than the pixels can show (no blur is added then)."""
    srb = sc.detector.srb_mm
    if not srb:
        return []
    if sc.pitch_u_mm == sc.pitch_v_mm:
        notes = [srb_shortfall_note(srb, sc.pitch_u_mm, "u and v")]
    else:
        notes = [srb_shortfall_note(srb, sc.pitch_u_mm, "u (columns)"),
                 srb_shortfall_note(srb, sc.pitch_v_mm, "v (rows)")]
    return [n for n in notes if n]


def _blur(img: np.ndarray, sigmas: list[tuple[float, float]]) -> np.ndarray:
    sr = float(np.sqrt(sum(a * a for a, _ in sigmas)))
    sc_ = float(np.sqrt(sum(b * b for _, b in sigmas)))
    if sr < 1e-3 and sc_ < 1e-3:
        return img
    return gaussian_filter(img, (sr, sc_), mode="nearest", truncate=5.0)


@dataclass
class GreyScale:
    """Deposited energy (keV) -> grey value, and the noise model."""

    slope: float
    offset: float
    imin: float
    imax: float
    snr_at_imax: float | None

    def grey(self, energy_kev: np.ndarray) -> np.ndarray:
        return self.slope * energy_kev + self.offset

    def noisy(self, grey: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
        if not self.snr_at_imax:
            return grey
        span = max(self.imax - self.imin, 1e-12)
        var = (span / self.snr_at_imax) ** 2 * np.clip(grey - self.imin, 0, None) / span / max(frames, 1)
        return grey + np.sqrt(var) * rng.standard_normal(grey.shape)


def grey_scale(sc: CtsimuScenario, free_beam_kev: np.ndarray) -> GreyScale:
    det = sc.detector
    emax = float(free_beam_kev.max())
    if det.factor_per_j is not None:
        slope = det.factor_per_j * KEV_TO_J
        off = det.offset or 0.0
        return GreyScale(slope, off, off, slope * emax + off, det.snr_at_imax)
    if emax <= 0:
        raise XrmInputError("the free beam deposits no energy on the detector (check source, "
                            "filters and geometry)")
    return GreyScale((det.imax - det.imin) / emax, det.imin, det.imin, det.imax, det.snr_at_imax)


#: End weights (in units of the sub-ray step) of the extended closed rule for ``ss >= 5``
#: (interior weights 1): the trapezoid rule with end corrections, exact for cubics
#: (``tests/test_ctsimu_run.py`` checks the moments).
_END_WEIGHTS = (3.0 / 8.0, 7.0 / 6.0, 23.0 / 24.0)


def subpixel_rule(ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-ray positions (pixel units from the pixel's low edge) and weights along one axis.

    ``ss = 1``: one ray through the pixel centre. ``ss >= 2``: ``ss + 1`` rays at ``k / ss``,
    ``k = 0 .. ss``, the pixel's edges included, weighted by a closed rule that is exact for
    cubics: Simpson (``ss`` = 2, 4), Simpson's 3/8 (``ss`` = 3), and for ``ss >= 5`` the
    extended trapezoid rule with end corrections ``(3/8, 7/6, 23/24, 1, ..., 1, 23/24, 7/6,
    3/8) / ss`` (interior weights equal, as in a plain grid). The pixel value is the
    weighted sum over the ``(ss + 1)^2`` rays of the pixel (product rule); neighbouring
    pixels share their edge rays, so ``ss x ss`` rays per pixel are traced, as before.

    Why edges included: a straight edge (a half-plane) that covers part of a pixel covers at
    least one of its corners and leaves at least one uncovered, so every partly covered
    pixel reads partly covered, however little the edge clips it (an interior ``ss x ss``
    grid misses pixels clipped by less than about half a sub-ray step; CTSimU 2D-WE-2
    counts them). Why exact for cubics: the pixel aperture's variance ``pitch^2 / 12`` is
    integrated exactly (an interior grid gives ``(1 - 1/ss^2) pitch^2 / 12``), which the
    detector unsharpness (2D-DW-1) and edge spread (2D-WE-1) depend on. An edge that runs
    exactly through sub-rays (e.g. along a pixel border) is resolved by the projector's tie
    rule: one pixel then reads the weight of that sub-ray row off.
    """
    ss = int(ss)
    if ss < 1:
        raise XrmInputError(f"supersample must be >= 1, got {ss}")
    if ss == 1:
        return np.array([0.5]), np.array([1.0])
    if ss == 2:
        w = np.array([1.0, 4.0, 1.0]) / 6.0
    elif ss == 3:
        w = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0
    elif ss == 4:
        w = np.array([1.0, 4.0, 2.0, 4.0, 1.0]) / 12.0
    else:
        w = np.ones(ss + 1)
        w[:3] = _END_WEIGHTS
        w[-3:] = _END_WEIGHTS[::-1]
        w /= ss
    return np.arange(ss + 1) / ss, w


def sample_grid_shape(rows: int, cols: int, ss: int) -> tuple[int, int]:
    """(rows, cols) of the virtual detector of sub-rays for ``rows x cols`` pixels."""
    if ss == 1:
        return rows, cols
    return rows * ss + 1, cols * ss + 1


def band_vectors(vec: np.ndarray, rows: int, cols: int, ss: int, r0: int, r1: int) -> np.ndarray:
    """Vectors of the virtual detector of sub-rays for pixel rows ``r0:r1`` (all columns).

    ``ss = 1``: the pixels themselves. ``ss >= 2``: sample ``(R, C)``, ``R = 0 .. (r1 - r0) ss``,
    ``C = 0 .. cols ss``, lies at row ``r0 - 0.5 + R / ss`` and column ``-0.5 + C / ss`` of the
    real detector (pixel ``(r, c)`` spans rows ``r -+ 0.5``, columns ``c -+ 0.5``), i.e. on the
    sub-ray positions of :func:`subpixel_rule`.
    """
    out = np.array(vec, float, copy=True)
    u, v = vec[..., 6:9], vec[..., 9:12]
    if ss == 1:
        centre_row = (r0 + r1 - 1) / 2
    else:
        centre_row = r0 - 0.5 + (r1 - r0) / 2
    out[..., 3:6] = vec[..., 3:6] + (centre_row - (rows - 1) / 2) * v
    out[..., 6:9] = u / ss
    out[..., 9:12] = v / ss
    return out


def integrate_pixels(samples: np.ndarray, ss: int) -> np.ndarray:
    """Pixel values from the sub-ray grid of :func:`band_vectors` (product rule of
    :func:`subpixel_rule`), ``(R, C)`` samples -> ``(rows, cols)`` pixels."""
    if ss == 1:
        return np.asarray(samples, np.float64)
    _, w = subpixel_rule(ss)
    n_r, n_c = (samples.shape[0] - 1) // ss, (samples.shape[1] - 1) // ss
    a = np.asarray(samples, np.float64)
    cols = sum(w[j] * a[:, j:j + n_c * ss:ss] for j in range(ss + 1))
    return sum(w[i] * cols[i:i + n_r * ss:ss] for i in range(ss + 1))


def expected_energy(sc: CtsimuScenario, *, supersample: int = 2, arch: str = "auto",
                    views: slice | None = None):
    """Yield (start, deposited keV per pixel (n, rows, cols)) view by view, before blur.

    Each pixel integrates the *intensity* over its area with the sub-ray rule of
    :func:`subpixel_rule` (``supersample`` sub-ray steps per pixel side). The core
    ``twin.acquisition.iter_projections`` averages intensities too
    (:meth:`twin.scene.Scene.spectral_sums`); the difference is the sub-ray rule: the core
    takes the mean of an interior ``ss x ss`` grid, this runner includes the pixel's edges
    and corners with weights exact for cubics, so every pixel an edge clips reads partly
    covered (CTSimU 2D-WE-2) and the pixel aperture's variance is exact (2D-WE-1, 2D-DW-1).
    The detector is traced in bands of rows.
    Spectral sums are normalised by the sum the same kernel gives for an empty ray, so a
    free-beam pixel equals the flat field's value exactly.
    """
    from twin.runtime import init_taichi
    from twin.scene import Scene

    used = init_taichi(arch)
    e, w = spectral_weights(sc)
    omega = _omega(sc)
    vec = sc.vectors if views is None else sc.vectors[views]
    ss = int(supersample)
    subpixel_rule(ss)  # validates ss
    if not sc.parts:
        for i in range(len(vec)):
            yield i, (w.sum() * omega)[None]
        return
    scene = Scene(parts=sc.parts).prepare()
    mu = np.array([m.mu_per_mm(e) for m in scene.materials])
    empty = np.zeros((1, len(scene.materials), 1, 1), np.float32)
    free_sum = float(spectral_sums(empty, mu, w[None], arch=used)[0, 0, 0, 0])
    _, grid_cols = sample_grid_shape(1, sc.cols, ss)
    per_row = grid_cols * ss * 4 * (len(scene.materials) + 2)
    band = int(max(1, min(sc.rows, VIEWS_PER_CHUNK_BYTES // per_row)))
    for i in range(len(vec)):
        img = np.empty((sc.rows, sc.cols))
        for r0 in range(0, sc.rows, band):
            r1 = min(sc.rows, r0 + band)
            bv = band_vectors(vec[i:i + 1], sc.rows, sc.cols, ss, r0, r1)
            g_rows, g_cols = sample_grid_shape(r1 - r0, sc.cols, ss)
            lengths, _ = scene.path_lengths(bv, g_rows, g_cols,
                                            parallel=sc.beam == "parallel", supersample=1, arch=used)
            sub = spectral_sums(lengths, mu, w[None], arch=used)[0, 0].astype(np.float64)
            img[r0:r1] = integrate_pixels(sub / free_sum, ss)
        yield i, (img * (w.sum() * omega))[None]


def _omega(sc: CtsimuScenario) -> np.ndarray:
    if sc.beam == "parallel":
        return np.full((sc.rows, sc.cols), sc.pitch_u_mm * sc.pitch_v_mm / PARALLEL_REFERENCE_MM ** 2)
    return pixel_solid_angles_sr(sc.vectors[0], sc.rows, sc.cols)


def _to_dtype(img: np.ndarray, bits: int | None) -> np.ndarray:
    if bits is not None and bits <= 16:
        return np.clip(np.rint(img), 0, 2 ** bits - 1).astype(np.uint16)
    return img.astype(np.float32)


def simulate_images(sc: CtsimuScenario, *, supersample: int = 2, arch: str = "auto", seed: int = 0
                    ) -> dict[str, np.ndarray]:
    """Projections, flats and darks as the detector writes them.

    Returns
    -------
    dict with ``projections`` (views, rows, cols), ``flats`` (n, rows, cols), ``darks``
    (n, rows, cols) in the output dtype, and ``grey`` (GreyScale).
    """
    acq, det = sc.acquisition, sc.detector
    sig = [spot_blur_sigma_px(sc), detector_blur_sigma_px(sc)]
    e, w = spectral_weights(sc)
    free = w.sum() * _omega(sc)
    gs = grey_scale(sc, free)
    out = np.empty((len(sc.vectors), sc.rows, sc.cols), np.uint16 if (det.bit_depth or 32) <= 16 else np.float32)
    for start, chunk in expected_energy(sc, supersample=supersample, arch=arch):
        for k, img in enumerate(chunk):
            i = start + k
            g = gs.grey(_blur(img, sig))
            g = gs.noisy(g, acq.frame_average, np.random.default_rng([seed, 1, i]))
            out[i] = _to_dtype(g, det.bit_depth)
    flat_grey = gs.grey(_blur(free, sig))
    flats = np.empty((acq.n_flats, sc.rows, sc.cols), out.dtype)
    for i in range(acq.n_flats):
        g = flat_grey if acq.flat_ideal else gs.noisy(flat_grey, acq.flat_average * acq.frame_average,
                                                      np.random.default_rng([seed, 2, i]))
        flats[i] = _to_dtype(g, det.bit_depth)
    darks = np.empty((acq.n_darks, sc.rows, sc.cols), out.dtype)
    for i in range(acq.n_darks):
        darks[i] = _to_dtype(np.full((sc.rows, sc.cols), gs.offset), det.bit_depth)
    return {"projections": out, "flats": flats, "darks": darks, "grey": gs}


# ------------------------------------------------------------------------------- writing
def _write_stack(folder: Path, pattern: str, images: np.ndarray) -> None:
    import tifffile

    for i, img in enumerate(images):
        with atomic_path(folder / (pattern % i)) as tmp:
            tifffile.imwrite(tmp, img)


def metadata(sc: CtsimuScenario, name: str, scenario_file: str, images: dict, notes: list[str]) -> dict:
    """The CTSimU metadata dict the toolbox reads (``output.projections``, flats, darks)."""
    dtype = "uint16" if images["projections"].dtype == np.uint16 else "float32"
    proj = {
        "filename": f"{name}_%04d.tif", "number": int(len(images["projections"])),
        "datatype": dtype, "byteorder": "little", "headersize": {"file": 0, "image": 0},
        "dimensions": {"x": {"value": sc.cols, "unit": "px"}, "y": {"value": sc.rows, "unit": "px"}},
        "pixelsize": {"x": {"value": sc.pitch_u_mm, "unit": "mm"}, "y": {"value": sc.pitch_v_mm, "unit": "mm"}},
        "max_intensity": {"value": float(images["grey"].imax), "unit": "GV"},
        "dark_field": {"number": int(len(images["darks"])), "frame_average": 1,
                       "filename": f"{name}_dark_%04d.tif" if len(images["darks"]) else None,
                       "projections_corrected": False},
        "flat_field": {"number": int(len(images["flats"])),
                       "frame_average": int(sc.acquisition.flat_average),
                       "filename": f"{name}_flat_%04d.tif" if len(images["flats"]) else None,
                       "projections_corrected": False},
    }
    from twin import __version__

    return {
        "file": {"name": name, "description": f"xrm-twin simulation of {scenario_file}",
                 "file_type": "CTSimU Metadata", "file_format_version": {"major": 1, "minor": 2}},
        "output": {"system": f"xrm-twin {__version__}", "date_measured": None, "projections": proj,
                   "tomogram": None, "reconstruction": None},
        "acquisition_geometry": {"path_to_CTSimU_JSON": scenario_file},
        "simulation": {"xrm-twin": {"notes": notes, "nxtomo": "projections.h5"}},
    }


def earlier_outputs(out: Path, name: str) -> list[Path]:
    """Files of an earlier :func:`run_to` of ``name`` in ``out`` (TIFF stacks and metadata).

    Not listed: the copy of the scenario (``<name>.json``, it may be the input itself) and
    ``projections.h5`` (one file, replaced atomically; runs of several names share it).
    """
    if not out.is_dir():
        return []
    patterns = (f"{name}_[0-9]*.tif", f"{name}_flat_[0-9]*.tif", f"{name}_dark_[0-9]*.tif",
                f"{name}_metadata.json")
    return sorted({p for pat in patterns for p in out.glob(pat) if p.is_file()})


def run_to(sc: CtsimuScenario, out_dir: str | Path, *, supersample: int = 2, arch: str = "auto",
           seed: int = 0, name: str | None = None, force: bool = False) -> dict[str, Any]:
    """Simulate a CTSimU scenario into ``out_dir``.

    Writes ``<name>_%04d.tif`` (projections), ``<name>_flat_%04d.tif``, ``<name>_dark_%04d.tif``,
    ``<name>_metadata.json`` (CTSimU metadata, readable by ``ctsimu.toolbox``), a copy of the
    scenario as ``<name>.json`` and ``projections.h5`` (NXtomo with the explicit vectors).

    A folder that already holds the outputs of a run of ``name`` is refused (checked before any
    work) unless ``force``: a second run with fewer views would otherwise leave the first run's
    later TIFFs beside a metadata file that no longer counts them. With ``force`` those files
    are removed once the new images are computed (a failed simulation leaves them as they were);
    other files in the folder are kept.

    Returns
    -------
    dict: ``metadata`` (path), ``notes`` (approximations), ``max_grey``, ``magnification``.
    """
    import shutil

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise XrmInputError(f"output folder {str(out)!r} is a file")
    name = name or sc.name.replace(" ", "_")
    stale = earlier_outputs(out, name)
    if stale and not force:
        raise XrmInputError(f"output folder {str(out)!r} holds {len(stale)} file(s) of an earlier "
                            f"run of {name!r} (e.g. {stale[0].name}); use --force to replace them")
    images = simulate_images(sc, supersample=supersample, arch=arch, seed=seed)
    for path in earlier_outputs(out, name):
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    _write_stack(out, f"{name}_%04d.tif", images["projections"])
    _write_stack(out, f"{name}_flat_%04d.tif", images["flats"])
    _write_stack(out, f"{name}_dark_%04d.tif", images["darks"])
    scen_file = f"{name}.json"
    if sc.path is not None and sc.path.is_file():
        if sc.path.resolve() != (out / scen_file).resolve():
            with atomic_path(out / scen_file) as tmp:
                shutil.copyfile(sc.path, tmp)
    else:
        write_text_atomic(out / scen_file, json.dumps(sc.raw, indent=1))
    notes = list(sc.notes) + unsharpness_notes(sc)
    meta = metadata(sc, name, scen_file, images, notes)
    meta_path = out / f"{name}_metadata.json"
    write_text_atomic(meta_path, json.dumps(meta, indent=2))
    write_nxtomo_ctsimu(out / "projections.h5", sc, images)
    return {"metadata": str(meta_path), "notes": notes, "max_grey": float(images["grey"].imax),
            "magnification": magnification(sc)}


def write_nxtomo_ctsimu(path: Path, sc: CtsimuScenario, images: dict) -> None:
    """NXtomo beside the TIFFs (explicit per-view vectors under /entry/xrm_twin/vectors)."""
    from twin.ctsimu.geometry import explicit_geometry
    from twin.nxtomo import write_nxtomo

    @dataclass
    class _Chunk:
        start: int
        images: np.ndarray

    g = explicit_geometry(sc)
    write_nxtomo(path, g, [_Chunk(0, images["projections"])], images["flats"], images["darks"],
                 dtype=images["projections"].dtype, scenario_json=sc.spec.to_json(),
                 source={"voltage": float(sc.spectrum.kvp), "power": float(sc.spectrum.power_w)},
                 exposure_s=sc.detector.integration_time_s,
                 extra_attrs={"ctsimu_scenario": str(sc.path or ""), "ideal": sc.detector.ideal})
