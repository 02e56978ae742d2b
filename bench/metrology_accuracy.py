"""Accuracy of recon metrology/detectability against analytic references (prints a table).

Run:  python bench/metrology_accuracy.py

Every number here is also asserted (with a tolerance) in tests/test_metrology_*.py; this script
prints the actual errors for docs/notes-metrology.md.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc, expit

from recon import detectability as dt
from recon import image_quality as iq
from recon import metrology as me
from recon import pod
from recon.thickness import local_thickness_um


def grid(n):
    return np.mgrid[:n, :n, :n].astype(float)


def main() -> None:
    rng = np.random.default_rng(0)
    print("## thickness (diameter, voxels): mean error over 6 random sub-voxel placements")
    n = 64
    z, y, x = grid(n)
    for kind, size in (("plate", 8), ("plate", 9), ("rod", 16), ("rod", 40), ("ball", 16),
                       ("ball", 40), ("tube-wall", 6), ("tube-wall", 10)):
        errs = []
        for _ in range(6):
            o = rng.uniform(-0.5, 0.5, 3) + n / 2 - 0.5
            if kind == "plate":
                m = np.abs(z - o[0]) < size / 2
            elif kind == "rod":
                m = (x - o[2]) ** 2 + (y - o[1]) ** 2 <= (size / 2) ** 2
            elif kind == "ball":
                m = (x - o[2]) ** 2 + (y - o[1]) ** 2 + (z - o[0]) ** 2 <= (size / 2) ** 2
            else:
                r2 = (x - o[2]) ** 2 + (y - o[1]) ** 2
                m = (r2 >= 18 ** 2) & (r2 <= (18 + size) ** 2)
            errs.append(local_thickness_um(m, 1.0)[m].mean() - size)
        print(f"{kind:10s} {size:4d}  mean err {np.mean(errs):+.2f}  sd {np.std(errs):.2f}")

    print("\n## sphere volume / surface (labels, smoothed marching cubes sigma 0.7)")
    for r in (5.0, 10.0, 20.0, 30.0):
        nn = int(2 * r) + 10
        z2, y2, x2 = grid(nn)
        ev, ea = [], []
        for _ in range(4):
            c = nn / 2 + rng.uniform(-0.5, 0.5, 3)
            m = ((x2 - c[2]) ** 2 + (y2 - c[1]) ** 2 + (z2 - c[0]) ** 2 <= r * r).astype(np.uint8)
            res = me.measure_components(m, 1.0, {1: "b"}, thickness=False)["b"]
            ev.append(res["volume_mm3"] * 1e9 / (4 / 3 * math.pi * r ** 3) - 1)
            ea.append(res["surface_mm2"] * 1e6 / (4 * math.pi * r ** 2) - 1)
        print(f"R={r:4.0f} vox  volume {100 * np.mean(ev):+.2f} %  surface {100 * np.mean(ea):+.2f} %")

    print("\n## MTF of a Gaussian-blurred edge (cylinder R=40 vox)")
    yy, xx = np.mgrid[:128, :128]
    rr = np.hypot(yy - 63.3, xx - 64.1)
    for s in (1.0, 1.5, 2.5):
        img = 0.5 * erfc((rr - 40) / (s * math.sqrt(2))) * 2 + 0.5
        vol = np.repeat(img[None], 8, 0) + rng.normal(0, 0.01, (8, 128, 128))
        m = iq.mtf_edge_cylinder(vol, 1000.0)  # 1 mm voxels: f in cycles/voxel
        f = m["freq_per_voxel"]
        ref = np.exp(-2 * math.pi ** 2 * s ** 2 * f ** 2)
        sel = ref >= 0.05
        f50 = math.sqrt(math.log(2) / (2 * math.pi ** 2 * s ** 2))
        print(f"sigma {s} vox: max |MTF - exp(-2 pi^2 s^2 f^2)| = {np.abs(m['mtf'][sel] - ref[sel]).max():.4f}, "
              f"MTF50 error {100 * (m['mtf50_per_mm'] / f50 - 1):+.2f} %")

    print("\n## NPS of white noise")
    v = rng.normal(0, 0.05, (64, 64, 64))
    nps = iq.nps_3d(v, 4.0, roi_vox=32)
    print(f"mean NPS / (sigma^2 dv) = {nps['nps'].mean() / (0.05 ** 2 * (0.004) ** 3):.4f}")

    print("\n## d' NPW, white noise vs closed form dC sqrt(sum s^2)/sigma")
    s = dt.task_signal("void", 30.0, 5.0, shape=(32,) * 3)
    r = dt.detectability({"kind": "void", "size_um": 30.0, "contrast_per_mm": 0.01}, 5.0,
                         nps=0.02 ** 2, shape=(32,) * 3)
    print(f"d' = {r['dprime_npw']:.6f}, closed form {0.01 * math.sqrt((s ** 2).sum()) / 0.02:.6f}")

    print("\n## POD hit/miss: coverage of a90/95 over 100 synthetic data sets (n=150, logit)")
    b0, b1 = -12.0, 4.0
    true_a90 = math.exp((math.log(9) - b0) / b1)
    cov_lr = cov_d = 0
    for k in range(100):
        g = np.random.default_rng(1000 + k)
        a = np.exp(g.uniform(math.log(5), math.log(60), 150))
        hit = g.random(150) < expit(b0 + b1 * np.log(a))
        f = pod.fit_hit_miss(a, hit)
        cov_lr += f["a90_95"] >= true_a90
        cov_d += f["a90_95_delta"] >= true_a90
    print(f"likelihood ratio {cov_lr} %, delta method {cov_d} % (nominal 95 %)")


if __name__ == "__main__":
    main()
