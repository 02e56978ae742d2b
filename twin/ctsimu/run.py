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

from twin.ctsimu.reader import KEV_TO_J, CtsimuScenario
from twin.errors import XrmInputError
from twin.filters import stack_transmission
from twin.spectral import prune_bins, spectral_sums

#: Gaussian sigma of the detector PSF per unit of basic spatial resolution SRb. Chosen so
#: that the Gaussian MTF is 20 % at 1 / (2 SRb) (the duplex-wire period at the 20 % dip):
#: ``sigma = sqrt(ln 5 / 2) / (pi f20)``, ``f20 = 1 / (2 SRb)``.
SRB_TO_SIGMA = float(np.sqrt(np.log(5.0) / 2.0) * 2.0 / np.pi)
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
    """Detector PSF from the basic spatial resolution, Gaussian sigma (rows, columns) in px."""
    srb = sc.detector.srb_mm
    if not srb:
        return 0.0, 0.0
    s = SRB_TO_SIGMA * srb
    return s / sc.pitch_v_mm, s / sc.pitch_u_mm


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


def band_vectors(vec: np.ndarray, rows: int, cols: int, ss: int, r0: int, r1: int) -> np.ndarray:
    """Vectors of a virtual detector of ``ss x ss`` sub-pixels per pixel, rows ``r0:r1`` only.

    Sub-pixel ``(R, C)`` of the band lies at ``((C + 0.5) / ss - 0.5)`` columns and
    ``(r0 + (R + 0.5) / ss - 0.5)`` rows of the real detector.
    """
    out = np.array(vec, float, copy=True)
    u, v = vec[..., 6:9], vec[..., 9:12]
    n_sub = (r1 - r0) * ss
    centre_row = r0 + ((n_sub - 1) / 2 + 0.5) / ss - 0.5
    out[..., 3:6] = vec[..., 3:6] + (centre_row - (rows - 1) / 2) * v
    out[..., 6:9] = u / ss
    out[..., 9:12] = v / ss
    return out


def expected_energy(sc: CtsimuScenario, *, supersample: int = 2, arch: str = "auto",
                    views: slice | None = None):
    """Yield (start, deposited keV per pixel (n, rows, cols)) view by view, before blur.

    Supersampling traces ``ss x ss`` sub-pixels and averages their *intensities* (the core
    projector's own supersampling averages path lengths, which is wrong at strong edges:
    partial pixel coverage, CTSimU 2D-WE-2). The detector is traced in bands of rows.
    """
    from twin.runtime import init_taichi
    from twin.scene import Scene

    used = init_taichi(arch)
    e, w = spectral_weights(sc)
    omega = _omega(sc)
    vec = sc.vectors if views is None else sc.vectors[views]
    ss = int(supersample)
    if not sc.parts:
        for i in range(len(vec)):
            yield i, (w.sum() * omega)[None]
        return
    scene = Scene(parts=sc.parts).prepare()
    mu = np.array([m.mu_per_mm(e) for m in scene.materials])
    per_row = sc.cols * ss * ss * 4 * (len(scene.materials) + 2)
    band = int(max(1, min(sc.rows, VIEWS_PER_CHUNK_BYTES // per_row)))
    for i in range(len(vec)):
        img = np.empty((sc.rows, sc.cols))
        for r0 in range(0, sc.rows, band):
            r1 = min(sc.rows, r0 + band)
            bv = band_vectors(vec[i:i + 1], sc.rows, sc.cols, ss, r0, r1)
            lengths, _ = scene.path_lengths(bv, (r1 - r0) * ss, sc.cols * ss,
                                            parallel=sc.beam == "parallel", supersample=1, arch=used)
            sub = spectral_sums(lengths, mu, w[None], arch=used)[0, 0].astype(np.float64)
            img[r0:r1] = sub.reshape(r1 - r0, ss, sc.cols, ss).mean(axis=(1, 3))
        yield i, (img * omega)[None]


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
        tifffile.imwrite(folder / (pattern % i), img)


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


def run_to(sc: CtsimuScenario, out_dir: str | Path, *, supersample: int = 2, arch: str = "auto",
           seed: int = 0, name: str | None = None) -> dict[str, Any]:
    """Simulate a CTSimU scenario into ``out_dir``.

    Writes ``<name>_%04d.tif`` (projections), ``<name>_flat_%04d.tif``, ``<name>_dark_%04d.tif``,
    ``<name>_metadata.json`` (CTSimU metadata, readable by ``ctsimu.toolbox``), a copy of the
    scenario as ``<name>.json`` and ``projections.h5`` (NXtomo with the explicit vectors).

    Returns
    -------
    dict: ``metadata`` (path), ``notes`` (approximations), ``max_grey``, ``magnification``.
    """
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or sc.name.replace(" ", "_")
    images = simulate_images(sc, supersample=supersample, arch=arch, seed=seed)
    _write_stack(out, f"{name}_%04d.tif", images["projections"])
    _write_stack(out, f"{name}_flat_%04d.tif", images["flats"])
    _write_stack(out, f"{name}_dark_%04d.tif", images["darks"])
    scen_file = f"{name}.json"
    if sc.path is not None and sc.path.is_file():
        if sc.path.resolve() != (out / scen_file).resolve():
            shutil.copyfile(sc.path, out / scen_file)
    else:
        (out / scen_file).write_text(json.dumps(sc.raw, indent=1), encoding="utf-8")
    notes = list(sc.notes)
    meta = metadata(sc, name, scen_file, images, notes)
    meta_path = out / f"{name}_metadata.json"
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
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
