"""Rigid registration recovers a known rotation and shift; change maps count new phases."""

import numpy as np
from scipy import ndimage as ndi

from recon import registration as rg


def test_recovers_known_rigid_transform():
    rng = np.random.default_rng(0)
    n = 64
    f = ndi.gaussian_filter(rng.random((n, n, n)).astype(np.float32), 3)
    f = (f - f.mean()) / f.std()
    rot, tr = (2.0, -1.5, 3.0), (1.5, -2.2, 0.8)
    R, off = rg.affine_params(f.shape, rot, tr)
    Ri = np.linalg.inv(R)
    moving = ndi.affine_transform(f, Ri, offset=-Ri @ off, order=3, mode="nearest")
    r = rg.register_rigid(f, moving, 5.0, levels=(2, 1))
    assert np.allclose(r["rotation_deg"], rot, atol=0.1)
    assert np.allclose(r["translation_vox"], tr, atol=0.1)
    assert np.allclose(r["translation_mm"], np.array(tr) * 0.005, atol=0.1 * 0.005)
    back = rg.apply_rigid(moving, r)
    inner = (slice(12, -12),) * 3
    assert np.corrcoef(back[inner].ravel(), f[inner].ravel())[0, 1] > 0.99


def test_change_map_new_gap():
    a = np.zeros((30, 30, 30), np.uint8)
    a[5:25, 5:25, 5:25] = 1
    b = a.copy()
    b[10:12, 8:20, 8:20] = 2  # a new 2-voxel gap (label 2) after cycling
    c = rg.change_map(a.astype(float), b.astype(float), 2.0, labels_before=a, labels_after=b,
                      names={1: "electrode", 2: "gap"})
    assert c["labels"]["gap"]["appeared_mm3"] == 2 * 12 * 12 * (0.002 ** 3)
    assert c["labels"]["electrode"]["disappeared_mm3"] == c["labels"]["gap"]["appeared_mm3"]


def test_full_resolution_translation_refinement():
    """Coarse levels only (4, 2) leave a fraction of a voxel; the phase-correlation refinement
    at full resolution brings the translation within 0.05 voxel of a known sub-voxel shift."""
    rng = np.random.default_rng(1)
    n = 96
    f = ndi.gaussian_filter(rng.random((n, n, n)).astype(np.float32), 1.5)
    f = (f - f.mean()) / f.std()
    rot, tr = (0.0, 0.0, 0.0), (2.37, -1.62, 0.71)
    R, off = rg.affine_params(f.shape, rot, tr)
    moving = ndi.affine_transform(f, np.linalg.inv(R), offset=-np.linalg.inv(R) @ off, order=3,
                                  mode="nearest")
    moving = moving + rng.normal(0, 0.3, moving.shape).astype(np.float32)
    fine = rg.register_rigid(f, moving, 5.0, levels=(4, 2), refine_translation=True,
                             refine_crop_vox=64)
    assert np.allclose(fine["translation_vox"], tr, atol=0.05)
    assert np.allclose(fine["rotation_deg"], rot, atol=0.1)
