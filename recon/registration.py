"""Rigid registration of two scans of the same cell, and change maps (before/after cycling).

Method: translation from phase correlation (scikit-image ``phase_cross_correlation``), then
rotation + translation refined by maximising the normalised cross-correlation (NCC) with Powell's
method, coarse to fine (block-averaged volumes, factors ``levels``).

Transform convention: the registered moving volume is ``M'(p) = M(R (p - c) + c + t)`` for
voxel index ``p`` (z, y, x), ``c`` the array centre. Reported as ``rotation_deg`` (x, y, z):
right-handed rotations about the sample axes applied in the order x, then y, then z (extrinsic),
and ``translation_mm`` (x, y, z); ``matrix_zyx``/``offset_zyx`` are what
``scipy.ndimage.affine_transform`` takes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy import optimize
from scipy.spatial.transform import Rotation

from recon import slabs
from recon.segmentation import check_volume
from recon.thickness import isotropic_voxel_um
from twin.errors import XrmInputError

__all__ = ["rotation_matrix_zyx", "affine_params", "apply_rigid", "register_rigid",
           "change_map", "deficit_volume"]


def rotation_matrix_zyx(rotation_deg_xyz: Sequence[float]) -> np.ndarray:
    """3x3 rotation acting on (z, y, x) index vectors for rotations about x, y, z (degrees)."""
    Rxyz = Rotation.from_euler("xyz", np.asarray(rotation_deg_xyz, float), degrees=True).as_matrix()
    P = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)  # xyz <-> zyx
    return P @ Rxyz @ P


def affine_params(shape: Sequence[int], rotation_deg_xyz: Sequence[float],
                  translation_vox_xyz: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, offset)`` for ``ndimage.affine_transform`` (index space, z y x)."""
    R = rotation_matrix_zyx(rotation_deg_xyz)
    c = (np.asarray(shape, float) - 1) / 2.0
    t = np.asarray(translation_vox_xyz, float)[::-1]
    return R, c + t - R @ c


def apply_rigid(moving: np.ndarray, transform: Mapping[str, Any], *, order: int = 1,
                cval: float = 0.0) -> np.ndarray:
    """Resample ``moving`` into the fixed frame with a transform from :func:`register_rigid`."""
    m = check_volume(moving, what="moving")
    return ndi.affine_transform(m.astype(np.float32), np.asarray(transform["matrix_zyx"]),
                                offset=np.asarray(transform["offset_zyx"]), order=order,
                                cval=cval, mode="constant")


def _down(v: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return v.astype(np.float32)
    s = [(n // f) * f for n in v.shape]
    v = v[:s[0], :s[1], :s[2]].astype(np.float32)
    return v.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean(axis=(1, 3, 5))


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask], b[mask]
    x = x - x.mean()
    y = y - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else 0.0


def register_rigid(fixed: np.ndarray, moving: np.ndarray, voxel_size_um: float, *,
                   levels: Sequence[int] = (4, 2, 1), max_rotation_deg: float = 15.0,
                   phase_correlation: bool = True, refine_translation: bool = False,
                   refine_crop_vox: int = 192) -> dict[str, Any]:
    """Rigid (6-parameter) registration of ``moving`` onto ``fixed``.

    Parameters
    ----------
    fixed, moving : ndarray of float, shape (nz, ny, nx)
        Two scans on grids of the same shape and voxel size.
    voxel_size_um : float
    levels : sequence of int
        Block-averaging factors, coarse to fine (drop 1 for speed on large volumes).
    max_rotation_deg : float
        Bound on each rotation angle.
    phase_correlation : bool
        Initialise the translation by phase correlation at the coarsest level.
    refine_translation : bool
        After the last level, correct the translation at full resolution by sub-voxel phase
        correlation (upsampling 20) of the fixed volume against the registered moving one, on a
        central crop of at most ``refine_crop_vox`` per side: the full-resolution NCC level
        costs minutes on 320^3, and a half-resolution level leaves up to a voxel of error.

    Returns
    -------
    dict
        ``rotation_deg`` (x, y, z), ``translation_vox`` (x, y, z), ``translation_mm`` (x, y, z),
        ``matrix_zyx``, ``offset_zyx``, ``ncc`` (at the finest level), ``levels``.
    """
    vs = isotropic_voxel_um(voxel_size_um, what="registration")
    f = check_volume(fixed, what="fixed")
    m = check_volume(moving, what="moving")
    if f.shape != m.shape:
        raise XrmInputError(f"fixed {f.shape} and moving {m.shape} must have the same shape; "
                            "resample one onto the other's grid first")
    params = np.zeros(6)  # rx, ry, rz (deg), tx, ty, tz (voxels at full resolution)
    ncc = None
    for li, lev in enumerate(levels):
        fa, ma = _down(f, lev), _down(m, lev)
        if li == 0 and phase_correlation:
            from skimage.registration import phase_cross_correlation

            shift, _, _ = phase_cross_correlation(fa, ma, upsample_factor=10)
            params[3:] = -np.asarray(shift)[::-1] * lev  # shift moves moving onto fixed
        # evaluate the metric away from the borders (rotation brings in empty corners)
        mask = np.zeros(fa.shape, bool)
        b = [max(2, int(0.12 * n)) for n in fa.shape]
        mask[b[0]:-b[0], b[1]:-b[1], b[2]:-b[2]] = True

        def cost(p, fa=fa, ma=ma, mask=mask, lev=lev):
            R, off = affine_params(fa.shape, p[:3], p[3:] / lev)
            w = ndi.affine_transform(ma, R, offset=off, order=1, mode="nearest")
            return -_ncc(fa, w, mask)

        bounds = [(-max_rotation_deg, max_rotation_deg)] * 3 + \
            [(p - 0.25 * n * lev, p + 0.25 * n * lev) for p, n in zip(params[3:], fa.shape[::-1])]
        res = optimize.minimize(cost, params, method="Powell", bounds=bounds,
                                options={"xtol": 1e-3, "ftol": 1e-7, "maxfev": 4000})
        params = res.x
        ncc = -float(res.fun)
    R, off = affine_params(f.shape, params[:3], params[3:])
    if refine_translation:
        from skimage.registration import phase_cross_correlation

        w = ndi.affine_transform(m.astype(np.float32), R, offset=off, order=1, mode="nearest")
        crop = tuple(slice(max((n - refine_crop_vox) // 2, 0), max((n - refine_crop_vox) // 2, 0)
                           + min(n, refine_crop_vox)) for n in f.shape)
        shift, _, _ = phase_cross_correlation(f[crop].astype(np.float32), w[crop], upsample_factor=20)
        # F(p) = W(p - s) = M(R (p - s - c) + c + t): t becomes t - R s
        t_zyx = np.asarray(params[3:], float)[::-1] - R @ np.asarray(shift, float)
        params = np.concatenate([params[:3], t_zyx[::-1]])
        R, off = affine_params(f.shape, params[:3], params[3:])
        w = ndi.affine_transform(m.astype(np.float32), R, offset=off, order=1, mode="nearest")
        inner = np.zeros(f.shape, bool)
        b = [max(2, int(0.12 * n)) for n in f.shape]
        inner[b[0]:-b[0], b[1]:-b[1], b[2]:-b[2]] = True
        ncc = _ncc(f, w, inner)
    return {"rotation_deg": params[:3].tolist(), "translation_vox": params[3:].tolist(),
            "translation_mm": (params[3:] * vs / 1000.0).tolist(), "matrix_zyx": R.tolist(),
            "offset_zyx": off.tolist(), "ncc": ncc, "levels": list(levels)}


def change_map(before: np.ndarray, after_registered: np.ndarray, voxel_size_um: float, *,
               labels_before: np.ndarray | None = None, labels_after: np.ndarray | None = None,
               names: Mapping[int, str] | None = None, min_voxels: int = 1) -> dict[str, Any]:
    """Differences between two registered scans, and per-label appearance/disappearance.

    Parameters
    ----------
    before, after_registered : ndarray of float, shape (nz, ny, nx)
    voxel_size_um : float
    labels_before, labels_after : ndarray of int, optional
        Segmentations of both (same grid). Then for each label ``k`` (or each in ``names``):
        ``appeared`` (in after, not before) and ``disappeared`` volumes.
    min_voxels : int
        Connected changes smaller than this are ignored (registration noise at edges).

    Returns
    -------
    dict
        ``difference`` (after - before, float32 volume), ``rms_difference``, and when labels are
        given ``labels`` ``{name: {"volume_before_mm3", "volume_after_mm3", "appeared_mm3",
        "disappeared_mm3", "appeared_mask", "disappeared_mask"}}``.
    """
    vs = isotropic_voxel_um(voxel_size_um, what="change map")
    a = check_volume(before, what="before").astype(np.float32)
    b = check_volume(after_registered, what="after").astype(np.float32)
    if a.shape != b.shape:
        raise XrmInputError(f"before {a.shape} and after {b.shape} must share a grid")
    out: dict[str, Any] = {"difference": b - a,
                           "rms_difference": float(np.sqrt(np.mean((b - a) ** 2)))}
    if labels_before is None and labels_after is None:
        return out
    if labels_before is None or labels_after is None:
        raise XrmInputError("give both labels_before and labels_after (or neither)")
    la, lb = np.asarray(labels_before), np.asarray(labels_after)
    if la.shape != a.shape or lb.shape != a.shape:
        raise XrmInputError("labels must have the volumes' shape")
    dv = (vs / 1000.0) ** 3
    keys = names if names is not None else {int(k): str(int(k)) for k in
                                            np.union1d(np.unique(la), np.unique(lb)) if k != 0}
    from recon.segmentation import label_instances

    res = {}
    for k, nm in keys.items():
        ina, inb = la == k, lb == k
        app = label_instances(inb & ~ina, min_voxels=min_voxels)[0] > 0
        dis = label_instances(ina & ~inb, min_voxels=min_voxels)[0] > 0
        res[str(nm)] = {"volume_before_mm3": float(ina.sum()) * dv,
                        "volume_after_mm3": float(inb.sum()) * dv,
                        "appeared_mm3": float(app.sum()) * dv,
                        "disappeared_mm3": float(dis.sum()) * dv,
                        "appeared_mask": app, "disappeared_mask": dis}
    out["labels"] = res
    return out


def deficit_volume(difference: np.ndarray, mask: np.ndarray, voxel_size_um: float,
                   contrast_per_mm: float, *, valid: np.ndarray | None = None,
                   exclude: np.ndarray | None = None, grow_vox: int = 6,
                   ring_vox: int = 3) -> dict[str, Any]:
    """Volume of new low-attenuation material (a crack, a gap) from a registered difference.

    ``difference = after_registered - before`` holds ``-contrast`` over material that appeared
    (a crack filled with electrolyte where the paste was), blurred by the scan, and zero mean
    elsewhere: everything that did not change cancels (foam struts, foils, the interior scan's
    structure), so the change needs no model of its host. The volume is the deficit summed over
    the detection grown by ``grow_vox`` voxels (the blur's tails), against the median of an
    annulus ``ring_vox`` voxels beyond it (a level offset between the two scans), over the
    contrast:

        V = -sum_aperture (D - median_annulus D) * voxel^3 / contrast

    Parameters
    ----------
    difference : ndarray of float, shape (nz, ny, nx)
        After (registered) minus before, 1/mm.
    mask : ndarray of bool, same shape
        Where the change was detected (the detections of either scan, in the before frame).
    voxel_size_um : float
    contrast_per_mm : float
        ``mu_host - mu_fill`` (> 0), 1/mm.
    valid : ndarray of bool, optional
        Voxels seen by both scans (default all).
    exclude : ndarray of bool, optional
        Voxels of other changes, kept out of the aperture and the annulus.
    grow_vox, ring_vox : int

    Returns
    -------
    dict
        ``volume_mm3``, ``aperture_voxels``, ``annulus_level_per_mm``, ``noise_mm3`` (the
        volume's standard error from the annulus's spread, white-noise approximation).
    """
    d = check_volume(difference, what="difference")
    m = np.asarray(mask, bool)
    if m.shape != d.shape:
        raise XrmInputError(f"mask {m.shape} and difference {d.shape} differ in shape")
    if not contrast_per_mm or contrast_per_mm <= 0:
        raise XrmInputError(f"contrast_per_mm must be positive, got {contrast_per_mm!r}")
    ok = np.ones(d.shape, bool) if valid is None else np.asarray(valid, bool)
    if exclude is not None:
        ok = ok & ~np.asarray(exclude, bool)
    ap = (slabs.binary_dilation(m, iterations=int(grow_vox)) if grow_vox else m) & ok
    ring = slabs.binary_dilation(ap, iterations=int(ring_vox)) & ~ap & ok
    if not ap.any() or not ring.any():
        return {"volume_mm3": None, "aperture_voxels": int(ap.sum()), "annulus_level_per_mm": None,
                "noise_mm3": None}
    r = d[ring].astype(np.float64)
    base = float(np.median(r))
    dv = (float(voxel_size_um) / 1000.0) ** 3
    n = int(ap.sum())
    deficit = -float((d[ap].astype(np.float64) - base).sum())
    sd = 1.4826 * float(np.median(np.abs(r - base)))
    return {"volume_mm3": deficit * dv / contrast_per_mm, "aperture_voxels": n,
            "annulus_level_per_mm": base, "noise_mm3": float(sd * np.sqrt(n) * dv / contrast_per_mm)}
