"""A scan: projections, flats and darks from a :class:`~twin.plan.Plan`.

Per view: path lengths (projector) -> spectral sums (Beer-Lambert with the detector
response; with ``geometry.supersample`` = ss > 1 one integral per sub-ray and the ss x ss
intensities averaged over the pixel, :meth:`twin.scene.Scene.spectral_sums`) x pixel solid
angle -> focal-spot blur -> quanta and screen-gain noise -> screen / objective blur -> dark
current, read noise, ADC (:mod:`twin.detector`). Each view draws from
its own seeded generator ``default_rng([seed, 1, view])``, so results do not depend on how
views are chunked or scheduled.

With ``detector.ideal = true`` the images are the expected deposited energy per pixel
(float32, keV), flats the same without the sample and darks zero.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from scipy.ndimage import gaussian_filter

from twin.plan import Plan

#: Working memory allowed for one chunk of views, bytes.
CHUNK_BYTES = 256 * 2 ** 20


@dataclass
class ViewChunk:
    start: int
    images: np.ndarray  # (n, rows, cols)
    ray_samples: int


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return img
    return gaussian_filter(img, sigma, mode="nearest", truncate=4.0)


def map_views(work: Callable[[int], None], n_views: int) -> None:
    """``work(i)`` for every view ``i`` of a chunk, on the host's threads.

    The per-view read-out (focal-spot blur, quanta and screen-gain noise, optical blur, dark
    current, read noise, ADC) is numpy and SciPy work that releases the GIL, about 0.3 s per
    1024^2 view on one core: 3201 views would be a quarter of an hour on one core of a GPU
    node whose projector takes a minute. Each view writes only its own image and draws from
    its own generator, so the images are the same on any number of threads.
    """
    from twin.runtime import host_threads

    threads = min(host_threads(), int(n_views))
    if threads <= 1:
        for i in range(n_views):
            work(i)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(n_views)))  # list(): re-raises a view's error here


def _expected_sums(plan: Plan, sums: np.ndarray) -> np.ndarray:
    """Scale per-steradian sums by the pixel solid angle and blur by the focal spot."""
    out = np.empty(sums.shape, np.result_type(sums.dtype, np.float32))
    solid_angle = plan.solid_angle_sr[None].astype(np.float32)

    def view(v: int) -> None:
        np.multiply(sums[v], solid_angle, out=out[v])
        if plan.source_blur_sigma_px > 0.05:
            for k in range(out.shape[1]):
                out[v, k] = _blur(out[v, k], plan.source_blur_sigma_px)

    map_views(view, out.shape[0])
    return out


def _detect(plan: Plan, sums: np.ndarray, rng: np.random.Generator, gain: np.ndarray,
            dthick: np.ndarray) -> np.ndarray:
    """One view's (or flat's) read-out from expected sums (4, rows, cols)."""
    det = plan.detector
    frames = plan.frames
    q, s, s2, st = (sums[i].astype(np.float64) * frames for i in range(4))
    s_px = gain * (s + dthick * st)
    s2_px = gain * gain * s2
    electrons = det.sample_signal_electrons(q, s_px, s2_px, rng)
    electrons = _blur(electrons, plan.optical_blur_sigma_px)
    # read each frame: dark + read noise per frame, then average the frames
    total = np.zeros(electrons.shape)
    exp = plan.exposure_s
    e = np.minimum(electrons, det.full_well_e * frames)
    if det.dark_e_per_s > 0:
        e = e + rng.poisson(det.dark_e_per_s * exp * frames, size=e.shape)
    if det.read_noise_e > 0:
        e = e + det.read_noise_e * np.sqrt(frames) * rng.standard_normal(e.shape)
    total = e / frames
    adu = np.rint(total / det.gain_e_per_adu + det.offset_adu)
    return np.clip(adu, 0, 2 ** det.bit_depth - 1).astype(np.uint16)


def _expected_adu(plan: Plan, energy: np.ndarray, d_energy: np.ndarray, gain: np.ndarray,
                  dthick: np.ndarray) -> np.ndarray:
    """Noiseless read-out (``detector.noise = false``): expected ADU, float32, with blur.

    ``energy`` and ``d_energy`` (rows, cols) are the expected sums of weight rows 1 (deposited
    energy) and 3 (its derivative with the screen thickness), the only ones it needs."""
    det = plan.detector
    s_px = gain * (energy.astype(np.float64) + dthick * d_energy)
    electrons = _blur(det.electrons_per_kev * s_px, plan.optical_blur_sigma_px)
    electrons = electrons + det.dark_e_per_s * plan.exposure_s
    return (np.minimum(electrons, det.full_well_e) / det.gain_e_per_adu + det.offset_adu).astype(np.float32)


def noisy(plan: Plan) -> bool:
    return not plan.detector.ideal and bool(plan.spec.detector["noise"])


def output_dtype(plan: Plan):
    """uint16 ADU for a noisy detector, float32 otherwise."""
    return np.uint16 if noisy(plan) else np.float32


def weight_rows_needed(plan: Plan) -> tuple[int, ...]:
    """Rows of ``plan.weights`` the read-out uses: deposited energy (1) for the ideal detector,
    energy and screen-thickness derivative (1, 3) without noise, all four with noise."""
    if plan.detector.ideal:
        return (1,)
    if not noisy(plan):
        return (1, 3)
    return tuple(range(len(plan.weights)))


def views_per_chunk(plan: Plan) -> int:
    return int(max(1, min(plan.geometry.n_views, CHUNK_BYTES // max(plan.bytes_per_view_chunk(1), 1))))


def read_out(plan: Plan, part: np.ndarray, start: int, gain: np.ndarray | None,
             dthick: np.ndarray | None) -> np.ndarray:
    """The images of views ``start ..`` from their per-steradian spectral sums.

    Parameters
    ----------
    plan : Plan
    part : ndarray of float32, shape (n, len(weight_rows_needed(plan)), rows, cols)
        :meth:`twin.scene.Scene.spectral_sums` of the views: ``part[:, k]`` belongs to weight
        row ``weight_rows_needed(plan)[k]``.
    start : int
        Index of the first view (it seeds the view's generator).
    gain, dthick : ndarray, shape (rows, cols), or None for the ideal detector
        :meth:`twin.detector.DetectorModel.pixel_maps`.

    Returns
    -------
    ndarray, shape (n, rows, cols): uint16 ADU (noisy), float32 ADU (noiseless) or float32
    keV (ideal). Every view is read out on the host's threads (:func:`map_views`).
    """
    need = weight_rows_needed(plan)
    sums = _expected_sums(plan, part)
    n, rows, cols = sums.shape[0], sums.shape[2], sums.shape[3]
    if plan.detector.ideal:
        return sums[:, need.index(1)]
    if not noisy(plan):
        e, de = need.index(1), need.index(3)
        images = np.empty((n, rows, cols), np.float32)

        def read_expected(i: int) -> None:
            images[i] = _expected_adu(plan, sums[i, e], sums[i, de], gain, dthick)

        map_views(read_expected, n)
        return images
    images = np.empty((n, rows, cols), np.uint16)
    seed = plan.spec.seed

    def read_noisy(i: int) -> None:
        rng = np.random.default_rng([seed, 1, start + i])
        images[i] = _detect(plan, sums[i], rng, gain, dthick)

    map_views(read_noisy, n)
    return images


#: Read out chunk k on a host thread while the projector traces chunk k + 1: None (default)
#: does so on CUDA, where the projector leaves the host cores idle; True or False force it
#: (on the CPU the projector's own threads already fill the cores).
OVERLAP_READOUT: bool | None = None


def iter_projections(plan: Plan, *, arch: str = "auto",
                     progress: Callable[[int], None] | None = None) -> Iterator[ViewChunk]:
    """Yield projections chunk by chunk (uint16 ADU, or float32 keV if ideal).

    With :data:`OVERLAP_READOUT` (on CUDA by default) the read-out of a chunk runs on a host
    thread while the GPU traces the next one and while the caller writes the previous one:
    at most two chunks of spectral sums are alive at once. The images are the same either way
    (each view draws from its own generator).
    """
    from twin.runtime import current_arch

    g = plan.geometry
    vec = g.vectors()
    gain = dthick = None
    if not plan.detector.ideal:
        gain, dthick = plan.detector.pixel_maps((g.rows, g.cols), plan.spec.seed)
    step = views_per_chunk(plan)
    ss = int(plan.supersample)
    need = weight_rows_needed(plan)
    starts = list(range(0, g.n_views, step))
    overlap = OVERLAP_READOUT
    pool = None
    pending = None  # (start, views, ray samples, future of the images) of the previous chunk
    try:
        for start in starts:
            n = min(step, g.n_views - start)
            part, samples = plan.scene.spectral_sums(vec, g.rows, g.cols, plan.mu_per_mm,
                                                     plan.weights[list(need)],
                                                     parallel=g.beam == "parallel", supersample=ss,
                                                     view_start=start, n_views=n, arch=arch)
            if overlap is None:  # decided after the first trace, once Taichi has its arch
                overlap = current_arch() == "cuda" and len(starts) > 1
            if not overlap:
                images = read_out(plan, part, start, gain, dthick)
                del part  # before the next chunk's path lengths are traced
                if progress:
                    progress(n)
                yield ViewChunk(start, images, samples)
                del images
                continue
            if pool is None:
                pool = ThreadPoolExecutor(max_workers=1)
            job = (start, n, samples, pool.submit(read_out, plan, part, start, gain, dthick))
            del part  # the read-out holds it until done
            if pending is not None:
                yield _finished(pending, progress)
            pending = job
        if pending is not None:
            yield _finished(pending, progress)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _finished(job, progress) -> ViewChunk:
    """The chunk of an overlapped read-out, once it is done (its error re-raised here)."""
    start, n, samples, future = job
    images = future.result()
    if progress:
        progress(n)
    return ViewChunk(start, images, samples)


def flat_sums(plan: Plan) -> np.ndarray:
    """Expected sums without the sample, shape (4, rows, cols)."""
    g = plan.geometry
    flat = plan.weights.sum(axis=1)[None, :, None, None] * np.ones((1, 1, g.rows, g.cols))
    return _expected_sums(plan, flat.astype(np.float32))[0]


def flats_and_darks(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """Reference (flat) and dark frames, shapes (n_flats, rows, cols), (n_darks, rows, cols)."""
    g = plan.geometry
    n_flats, n_darks = int(plan.spec.detector["flats"]), int(plan.spec.detector["darks"])
    seed = plan.spec.seed
    fs = flat_sums(plan)
    if plan.detector.ideal:
        return (np.repeat(fs[1][None].astype(np.float32), max(n_flats, 1), axis=0),
                np.zeros((max(n_darks, 1), g.rows, g.cols), np.float32))
    gain, dthick = plan.detector.pixel_maps((g.rows, g.cols), seed)
    if not noisy(plan):
        zero = np.zeros_like(fs[1])
        return (np.repeat(_expected_adu(plan, fs[1], fs[3], gain, dthick)[None], max(n_flats, 1), axis=0),
                np.repeat(_expected_adu(plan, zero, zero, gain, dthick)[None], max(n_darks, 1), axis=0))
    flats = np.empty((n_flats, g.rows, g.cols), np.uint16)
    for i in range(n_flats):
        flats[i] = _detect(plan, fs, np.random.default_rng([seed, 2, i]), gain, dthick)
    darks = np.empty((n_darks, g.rows, g.cols), np.uint16)
    zero = np.zeros_like(fs)
    for i in range(n_darks):
        darks[i] = _detect(plan, zero, np.random.default_rng([seed, 3, i]), gain, dthick)
    return flats, darks


def flat_field_counts_per_s(plan: Plan) -> float:
    """Mean detected signal of a flat field, ADU per second of exposure above the offset.

    The number of counts per pixel per second at the plan's kV, power, filter, pixel size,
    distances and detector (the flux calibration of docs/instrument.md).
    """
    fs = flat_sums(plan)
    det = plan.detector
    if det.ideal:
        return float(fs[1].mean() / plan.exposure_s)
    electrons = det.electrons_per_kev * fs[1]
    return float(electrons.mean() / det.gain_e_per_adu / plan.exposure_s)


def flat_field_quanta_and_electrons(plan: Plan) -> tuple[float, float]:
    """Mean absorbed X-ray quanta and signal electrons per pixel in one flat-field exposure."""
    fs = flat_sums(plan)
    k = 1.0 if plan.detector.ideal else plan.detector.electrons_per_kev
    return float(fs[0].mean()), float(k * fs[1].mean())


def blurred_noise_fraction(sigma_px: float) -> float:
    """Per-pixel variance of white noise after the twin's Gaussian blur, over before.

    ``sum(w^2)`` of the 2-D kernel :func:`_blur` applies (separable: the square of the 1-D sum;
    1 for a blur below 0.05 px, which :func:`_blur` skips).
    """
    if sigma_px <= 0.05:
        return 1.0
    delta = np.zeros(int(2 * np.ceil(4.0 * sigma_px)) + 9)
    delta[delta.size // 2] = 1.0
    w = gaussian_filter(delta, sigma_px, mode="nearest", truncate=4.0)
    return float(np.sum(w * w) ** 2)


def flat_field_snr_at_brightest_pixel(plan: Plan) -> float:
    """Mean over standard deviation of one flat-field read at the brightest pixel (no sample).

    The detector model's noise (:meth:`twin.detector.DetectorModel.noise_variance_adu2`:
    Poisson on absorbed quanta with the Swank factor, reduced by the optical blur, then dark
    current, read noise and quantisation) on the expected flat field of :func:`flat_sums`, one
    frame, without the per-pixel gain map. What a user measures as mean/std of a flat.
    """
    det = plan.detector
    if det.ideal:
        raise ValueError("an ideal detector has no noise")
    fs = flat_sums(plan)
    i = int(np.argmax(fs[1]))
    deposited_kev, second_moment_kev2 = float(fs[1].flat[i]), float(fs[2].flat[i])
    mean_adu = det.electrons_per_kev * deposited_kev / det.gain_e_per_adu
    var_adu2 = float(det.noise_variance_adu2(
        np.array(deposited_kev), np.array(second_moment_kev2), plan.exposure_s,
        quantum_noise_factor=blurred_noise_fraction(plan.optical_blur_sigma_px)))
    return float(mean_adu / np.sqrt(var_adu2))


def flat_field_full_well_fraction(plan: Plan) -> float:
    """Brightest flat-field pixel as a fraction of the full well (> 1: the flat saturates)."""
    det = plan.detector
    if det.ideal:
        return 0.0
    return float(det.electrons_per_kev * flat_sums(plan)[1].max() / det.full_well_e)
