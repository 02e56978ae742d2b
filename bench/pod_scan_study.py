"""POD(a) of air voids in an Al cylinder on small simulated scans (exploratory study).

Run:  python bench/pod_scan_study.py

Writes a label phantom (Al cylinder, 40 air voids 12-180 um at known centres, 6 um grid), scans
it with the twin (flat panel, 80 kV) at two exposures and two voxel sizes, reconstructs, detects
voids (recon.defects.detect_voids inside the known cylinder), matches them to the truth and fits
POD(a) (Firth logit). Prints hit/miss strings (sorted by size) and a50/a90/a90_95 in um.

Status (see docs/notes-metrology.md): at 24 um voxels the detection is resolution-limited
(a50 ~ 75-85 um at 0.02 s and 0.001 s); with 120 um pixels (48 um voxels) the simulated
projections show no object at all (transmission 1.0), a twin issue reported to the lead.
"""
import time, numpy as np, tempfile, math
from pathlib import Path
from twin.scenario import validate
from twin.simulate import simulate_to
from twin.reconstruct import reconstruct_nxtomo
from twin.volume import grid_from_names
from twin.truth_io import write_truth
from recon import defects as df, pod

def phantom(path, seed=0, fine_um=6.0):
    rng = np.random.default_rng(seed)
    R, H = 0.55, 0.9  # mm
    n_xy, n_z = int(2 * 0.6 / (fine_um / 1000)), int(1.0 / (fine_um / 1000))
    origin = (-(n_xy - 1) / 2 * fine_um / 1000, -(n_xy - 1) / 2 * fine_um / 1000, -(n_z - 1) / 2 * fine_um / 1000)
    z = origin[2] + np.arange(n_z) * fine_um / 1000
    y = origin[1] + np.arange(n_xy) * fine_um / 1000
    x = origin[0] + np.arange(n_xy) * fine_um / 1000
    lab = ((x[None, None, :] ** 2 + y[None, :, None] ** 2 <= R * R) & (np.abs(z)[:, None, None] <= H / 2)).astype(np.uint8)
    voids, cents, radii = [], [], []
    while len(voids) < 40:
        d_um = float(np.exp(rng.uniform(np.log(12), np.log(180))))
        c = np.array([rng.uniform(-0.45, 0.45), rng.uniform(-0.45, 0.45), rng.uniform(-0.35, 0.35)])
        if (math.hypot(c[0], c[1]) > R - d_um / 2000 - 0.05 or abs(c[2]) > H / 2 - d_um / 2000 - 0.05
                or any(np.linalg.norm(c - o) < d_um / 2000 + ro + 0.1 for o, ro in zip(cents, radii))):
            continue
        cents.append(c); radii.append(d_um / 2000)
        r = d_um / 2000
        sl = [slice(max(int((cc - r - oo) / (fine_um / 1000)) - 1, 0), int((cc + r - oo) / (fine_um / 1000)) + 2) for cc, oo in zip(c[::-1], origin[::-1])]
        zz, yy, xx = np.meshgrid(z[sl[0]], y[sl[1]], x[sl[2]], indexing="ij")
        ball = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2 <= r * r
        lab[sl[0], sl[1], sl[2]][ball] = 0
        voids.append({"type": "void", "center_mm": c.tolist(), "size_um": d_um})
    write_truth(path, grid_from_names(lab, fine_um, origin, ["air", "Al"]), voids)
    return voids

def scan(tmp, phantom_file, exposure_s, pixels, pixel_um, views=120, seed=1):
    data = {"name": "pod", "seed": seed, "source": {"kvp": 80, "power_w": 5, "filter": "LE3"},
            "geometry": {"source_object_mm": 20, "object_detector_mm": 30, "objective": "flat-panel", "projections": views},
            "detector": {"pixels": pixels, "pixel_um": pixel_um, "exposure_s": exposure_s},
            "phantom": {"kind": "parts", "parts": [{"shape": "labels", "file": str(phantom_file)}]}}
    out = Path(tmp) / f"e{exposure_s}_p{pixel_um}"
    simulate_to(validate(data), out, arch="cpu", quiet=True)
    return reconstruct_nxtomo(out / "projections.h5", out, arch="cpu", quiet=True)

with tempfile.TemporaryDirectory() as tmp:
    t = time.time()
    truth = phantom(Path(tmp) / "ph.h5"); print("phantom %.1fs" % (time.time() - t), flush=True)
    for e, px, pu in ((0.02, [64, 48], 60), (0.001, [64, 48], 60), (0.02, [32, 24], 120)):
        rec = scan(tmp, Path(tmp) / "ph.h5", e, px, pu)
        vol, vs, org = rec["volume"], rec["voxel_size_um"], rec["origin_mm"]
        zc = org[2] + np.arange(vol.shape[0]) * vs / 1000; yc = org[1] + np.arange(vol.shape[1]) * vs / 1000; xc = org[0] + np.arange(vol.shape[2]) * vs / 1000
        host = (xc[None, None, :] ** 2 + yc[None, :, None] ** 2 <= 0.55 ** 2) & (np.abs(zc)[:, None, None] <= 0.45)
        det = df.detect_voids(vol, host, vs, origin_mm=org)
        print("host", host.sum(), "det", len(det), org)
        m = df.match_defects(det, truth, vs)
        a, hit = pod.hit_miss_from_match(truth, m)
        o = np.argsort(a)
        print(e, pu, vol.shape, vs, "tp", m["tp"], "fp", m["fp"], "".join("1" if h else "0" for h in hit[o]), "%.1fs" % (time.time() - t), flush=True)
        try:
            f = pod.fit_hit_miss(a, hit, method="firth"); print("  a50 %.1f a90 %.1f a90/95 %.1f um" % (f["a50"], f["a90"], f["a90_95"]))
        except Exception as ex: print("  ", ex)
