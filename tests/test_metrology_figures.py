"""Report figures are written as PNG files."""

import numpy as np

from recon import figures, pod
from recon.thickness import local_thickness_um, thickness_stats


def test_figures_written(tmp_path):
    m = np.zeros((30, 30, 30), bool)
    m[8:20, 5:25, 5:25] = True
    t = local_thickness_um(m, 2.0)
    st = thickness_stats(m, 2.0, thickness_um=t)
    paths = [figures.thickness_histogram({"foil": st}, tmp_path / "hist.png"),
             figures.thickness_map(t, tmp_path / "map.png", voxel_size_um=2.0)]
    rng = np.random.default_rng(0)
    a = np.exp(rng.uniform(np.log(5), np.log(60), 120))
    hit = rng.random(a.size) < 1 / (1 + np.exp(-(-12 + 4 * np.log(a))))
    fit = pod.fit_hit_miss(a, hit)
    paths.append(figures.pod_curve_figure(fit, tmp_path / "pod.png", a=a, hit=hit))
    paths.append(figures.detectability_table(
        {"cathode/separator": {"cnr": 3.2}},
        [{"task": {"kind": "void", "size_um": 10}, "dprime_npw": 4.1, "auc_npw": 0.998}],
        tmp_path / "table.png"))
    f = np.linspace(0, 100, 50)
    paths.append(figures.mtf_figure({"freq_per_mm": f, "mtf": np.exp(-(f / 50) ** 2),
                                     "mtf50_per_mm": 41.6, "mtf10_per_mm": 75.9},
                                    tmp_path / "mtf.png"))
    paths.append(figures.thickness_histogram_figure(st, tmp_path / "hist1.png", title="foil"))
    for p in paths:
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_components_3d_keeps_thin_parts_inside_the_triangle_budget(tmp_path, monkeypatch):
    """A one-voxel sheet vanishes under block averaging; it must still be drawn (at a lower
    iso-level), not meshed at full resolution (about 2 x 2 x 96^2 = 37 000 triangles here)."""
    import skimage.measure

    counts = []
    orig = skimage.measure.marching_cubes

    def counting(*a, **k):
        out = orig(*a, **k)
        counts.append(len(out[1]))
        return out

    monkeypatch.setattr(skimage.measure, "marching_cubes", counting)
    lab = np.zeros((96, 96, 96), np.uint8)
    lab[10:90, 10:90, 48] = 1          # sheet, one voxel thick
    lab[20:70, 20:70, 60:90] = 2       # block
    out = figures.components_3d_figure(lab, {1: "separator", 2: "paste"}, 10.0,
                                       tmp_path / "c3d.png", max_faces=8000)
    assert out.stat().st_size > 5000
    assert len(counts) == 2 and min(counts) > 0   # both parts drawn
    assert sum(counts) <= 8000, counts
