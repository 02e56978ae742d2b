"""Defect detectors on synthetic volumes with a known defect table."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from recon import defects as df
from recon.detectability import task_signal
from twin.errors import XrmInputError

VS = 4.0


def _partial_ball(shape, c, d, ss=4):
    """Voxel fraction inside a ball of diameter d (voxels) centred at c (z, y, x voxels)."""
    out = np.zeros(shape, np.float32)
    sl = tuple(slice(max(int(cc - d), 0), min(int(cc + d) + 2, n)) for cc, n in zip(c, shape))
    ax = [(np.arange(s.start * ss, s.stop * ss) + 0.5) / ss - 0.5 for s in sl]
    b = ((ax[0][:, None, None] - c[0]) ** 2 + (ax[1][None, :, None] - c[1]) ** 2
         + (ax[2][None, None, :] - c[2]) ** 2) <= (d / 2) ** 2
    sh = [s.stop - s.start for s in sl]
    out[sl] = b.reshape(sh[0], ss, sh[1], ss, sh[2], ss).mean((1, 3, 5))
    return out


def _electrode_with_voids(seed, n=96, noise=0.05):
    rng = np.random.default_rng(seed)
    host = np.zeros((n, n, n), bool)
    host[8:88, 8:88, 8:88] = True
    vol = host.astype(np.float32)
    truth, cents = [], []
    for _ in range(14):
        d = rng.uniform(3.0, 8.0)
        while True:
            c = rng.uniform(16, 80, 3)
            if all(np.linalg.norm(c - cc) > 14 for cc in cents):
                break
        cents.append(c)
        vol *= 1 - _partial_ball(vol.shape, c, d)
        truth.append({"type": "void", "center_mm": (c[::-1] * VS / 1000).tolist(),
                      "size_um": d * VS})
    vol = ndi.gaussian_filter(vol, 0.7) + rng.normal(0, noise, vol.shape).astype(np.float32)
    return vol, host, truth


def test_void_recall_and_sizes():
    vol, host, truth = _electrode_with_voids(0)
    det = df.detect_voids(vol, host, VS)
    m = df.match_defects(det, truth, VS)
    assert m["recall"] >= 0.9
    assert m["fp"] <= 1
    for pair in m["matched"]:
        assert abs(pair["detected_size_um"] / pair["truth_size_um"] - 1) < 0.15


def test_crack_found_with_area_and_orientation():
    n = 80
    rng = np.random.default_rng(1)
    host = np.zeros((n, n, n), bool)
    host[4:76, 4:76, 4:76] = True
    s = task_signal("crack", 40 * VS, VS, thickness_um=VS, orientation=(0.3, 0.2, 1.0),
                    shape=(n, n, n))
    vol = host * (1 - s).astype(np.float32)
    vol = ndi.gaussian_filter(vol, 0.7) + rng.normal(0, 0.05, vol.shape).astype(np.float32)
    det = df.detect_cracks(vol, host, VS)
    assert len(det) == 1
    area = np.pi * (20 * VS / 1000) ** 2
    assert abs(det[0]["area_mm2"] / area - 1) < 0.15
    nrm = np.array(det[0]["orientation"])
    truth_n = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
    assert abs(abs(nrm @ truth_n) - 1) < 0.01
    c = (n - 1) / 2 * VS / 1000
    assert np.allclose(det[0]["center_mm"], c, atol=2 * VS / 1000)


def test_delamination_area_and_gap():
    lab = np.zeros((40, 64, 64), np.uint8)
    lab[10:13] = 2  # foil
    lab[13:30] = 1  # active layer
    zz, yy, xx = np.mgrid[:40, :64, :64]
    disc = (yy - 30) ** 2 + (xx - 34) ** 2 <= 12 ** 2
    lab[(zz >= 13) & (zz < 16) & disc] = 0
    det = df.detect_delamination(lab, 1, 2, VS)
    assert len(det) == 1
    assert abs(det[0]["area_mm2"] / (disc[0].sum() * (VS / 1000) ** 2) - 1) < 1e-9
    assert det[0]["mean_gap_um"] == pytest.approx(3 * VS)
    det3 = df.detect_delamination(lab, 1, 2, VS, axis=None)
    assert len(det3) == 1 and det3[0]["mean_gap_um"] == pytest.approx(3 * VS)
    assert 0.6 < det3[0]["area_mm2"] / det[0]["area_mm2"] <= 1.0  # rim under-counted (doc)


def test_contact_short():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:9] = 3
    lab[10:18] = 4
    assert df.detect_contact(lab, 3, 4, VS) == []
    lab[9, 5:8, 5:8] = 3
    det = df.detect_contact(lab, 3, 4, VS)
    assert len(det) == 1 and det[0]["type"] == "short" and det[0]["n_voxels"] == 9


def test_match_defects_counts():
    truth = [{"type": "void", "center_mm": [0, 0, 0], "size_um": 20},
             {"type": "void", "center_mm": [1, 0, 0], "size_um": 20},
             {"type": "crack", "center_mm": [0, 1, 0], "size_um": 100}]
    det = [{"type": "void", "center_mm": [0.005, 0, 0]},
           {"type": "void", "center_mm": [0.5, 0.5, 0.5]},
           {"type": "crack", "center_mm": [0, 1.02, 0]}]
    m = df.match_defects(det, truth, VS)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1)
    assert m["by_type"]["void"]["recall"] == 0.5 and m["by_type"]["crack"]["recall"] == 1.0
    assert m["mistyped"] == [] and m["fp_elsewhere"] == 1
    # a void detection on the crack (the crack is matched already): mistyped, not noise
    m = df.match_defects(det + [{"type": "void", "center_mm": [0, 0.98, 0]}], truth, VS)
    assert m["fp"] == 2 and m["fp_elsewhere"] == 1
    assert [(x["detection_index"], x["truth_index"], x["truth_type"]) for x in m["mistyped"]] == \
        [(3, 2, "crack")]
    with pytest.raises(XrmInputError, match="center_mm"):
        df.match_defects([{"type": "void"}], truth, VS)


def test_pod_from_void_detections_and_json_rows():
    """End to end on one synthetic electrode: detections -> match -> hit/miss -> POD fit."""
    import json

    from recon import pod

    rng = np.random.default_rng(11)
    n = 96
    host = np.zeros((n, n, n), bool)
    host[4:92, 4:92, 4:92] = True
    vol = host.astype(np.float32)
    truth, cents = [], []
    for _ in range(40):
        d = float(np.exp(rng.uniform(np.log(0.8), np.log(4.0))))
        for _try in range(200):
            c = rng.uniform(10, 86, 3)
            if all(np.linalg.norm(c - cc) > 9 for cc in cents):
                break
        cents.append(c)
        vol *= 1 - _partial_ball(vol.shape, c, d)
        truth.append({"type": "void", "center_mm": (c[::-1] * VS / 1000).tolist(),
                      "size_um": d * VS})
    # noise high enough that hits and misses overlap near the threshold (else no finite MLE)
    vol = ndi.gaussian_filter(vol, 0.8) + rng.normal(0, 0.2, vol.shape).astype(np.float32)
    det = df.detect_voids(vol, host, VS)
    m = df.match_defects(det, truth, VS)
    json.dumps({"detected": det, "matched": m})  # report.json-safe types
    a, hit = pod.hit_miss_from_match(truth, m)
    assert a.size == 40 and 0 < hit.sum() < 40
    f = pod.fit_hit_miss(a, hit)
    # small voids are missed, big ones found: a90 lies inside the sampled range
    assert 0.8 * VS < f["a50"] < f["a90"] < f["a90_95"] < 6.0 * VS
    big = a >= 3 * VS
    assert hit[big].mean() >= 0.9  # recall for voids >= 3 voxels across


def test_closed_form_eigenvalues_match_lapack():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(500, 3, 3))
    A = A + A.transpose(0, 2, 1)
    A[:5] = np.diag([2.0, 2.0, 2.0])  # repeated eigenvalues
    ref = np.linalg.eigvalsh(A)[:, ::-1]
    got = np.stack(df._sym3_eigvals(A[:, 0, 0], A[:, 1, 1], A[:, 2, 2], A[:, 0, 1], A[:, 0, 2],
                                    A[:, 1, 2]), 1)
    assert np.abs(got - ref).max() < 1e-9


def test_sheetness_equals_lapack_eigenvalues_of_the_gaussian_hessian():
    """The Taichi sheetness kernel against numpy: Hessian by Gaussian-derivative filters,
    eigenvalues by LAPACK (eigvalsh), S = sigma^2 (l1 - |l2| - |l3|); slabs cross a halo."""
    rng = np.random.default_rng(3)
    v = ndi.gaussian_filter(rng.normal(size=(40, 24, 28)), 1.0).astype(np.float32)
    s = 1.2
    got = df.sheetness(v, s, slab=16)
    orders = {(0, 0): (2, 0, 0), (1, 1): (0, 2, 0), (2, 2): (0, 0, 2), (0, 1): (1, 1, 0),
              (0, 2): (1, 0, 1), (1, 2): (0, 1, 1)}
    H = np.zeros(v.shape + (3, 3))
    for (i, j), o in orders.items():
        H[..., i, j] = H[..., j, i] = ndi.gaussian_filter(v, s, order=o, mode="nearest")
    lam = np.linalg.eigvalsh(H)[..., ::-1]
    want = s * s * (lam[..., 0] - np.abs(lam[..., 1]) - np.abs(lam[..., 2]))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_detections_return_their_voxels_for_the_defect_map():
    """``return_voxels``: each row's voxels lie on its defect (the truth's gap, the void's
    ball), and ``twin.measure.defect_map_of`` paints row i as i + 1; the rows stay JSON."""
    import json

    from twin.measure import defect_map_of

    lab = np.zeros((40, 64, 64), np.uint8)
    lab[10:13] = 2
    lab[13:30] = 1
    zz, yy, xx = np.mgrid[:40, :64, :64]
    disc = (yy - 30) ** 2 + (xx - 34) ** 2 <= 12 ** 2
    gap = (zz >= 13) & (zz < 16) & disc
    lab[gap] = 0
    for axis in ("z", None):
        det = df.detect_delamination(lab, 1, 2, VS, axis=axis, return_voxels=True)
        assert len(det) == 1
        m = np.zeros(lab.shape, bool)
        m.reshape(-1)[det[0]["_voxels"]] = True
        assert m.sum() == det[0]["n_voxels"] and np.all(gap[m])
        assert m.sum() >= 0.6 * gap.sum()
    vol, host, truth = _electrode_with_voids(0)
    rows = df.detect_voids(vol, host, VS, return_voxels=True)
    dmap = defect_map_of(rows, vol.shape)
    assert dmap.max() == len(rows)
    for i, r in enumerate(rows, start=1):
        c = np.rint(np.asarray(r["center_mm"])[::-1] * 1000 / VS).astype(int)
        assert dmap[tuple(c)] == i                      # the void's centre is its own voxel
        assert np.count_nonzero(dmap == i) <= len(r["_voxels"])
    plain = df.detect_voids(vol, host, VS)
    assert all("_voxels" not in r for r in plain) and json.dumps(plain)
