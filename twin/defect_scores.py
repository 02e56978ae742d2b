"""How detectable each defect of the truth is in a reconstruction: d', POD(a), recall by size.

The ``detectability`` part of ``report.json`` beyond the CNR table. Everything is measured on
the reconstruction, with the truth telling *where* to look (which phases touch, where the
defects are), never *what* the image shows:

* **Resolution (task transfer function).** The Gaussian blur of the whole chain (focal spot,
  screen, detector, reconstruction) fitted on the interface between the two touching truth
  phases of highest CNR (:func:`recon.image_quality.edge_blur_at_interface`); the TTF is
  ``exp(-2 pi^2 sigma^2 f^2)``.
* **Noise.** The 3-D NPS (:func:`recon.image_quality.nps_3d`, mean-detrended, 50 %
  overlapping ROIs of 32, 16 or 8 voxels, the largest that fit) in ROIs entirely inside the
  host phase of each defect type, away from the defects; it includes the host's own texture
  (particles, foam), which a reader sees as clutter.
* **Task.** Per defect type, the median truth size (void diameter; crack extent and opening;
  delamination extent and gap), and the contrast ``mu_fill - mu_host``: ``mu_host`` is the
  host's median in the reconstruction, ``mu_fill`` the median of a thick phase of the fill's
  material when the volume has one (electrolyte, air), else the fill material's xraydb
  attenuation at the effective energy that best reproduces the thick phases' medians.
* **d'** of the non-prewhitening observer (:func:`recon.detectability.detectability`). The
  prewhitening d' is not reported: it divides by the measured NPS down to the task's lowest
  frequencies, which small detrended ROIs do not resolve (it came out at 1e12 on real runs).
* **POD(a)** from the hit/miss of the matched truth defects (MIL-HDBK-1823A GLM, Firth's
  penalised logit so perfectly separated data stay finite), with a50, a90 and a90/95. The
  size ``a`` is the diameter for voids, the opening for cracks and the gap for delaminations
  (what limits their visibility in CT); ``recall_by_size`` gives the raw hit rate per size
  in voxels.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from recon import slabs
from recon.distance import edt
from twin.errors import XrmInputError

#: The size a of a defect type for POD(a) (truth-table key) and, for d', its thickness key.
POD_SIZE_KEY = {"void": "size_um", "crack": "opening_um", "delamination": "gap_um"}
THICKNESS_KEY = {"crack": "opening_um", "delamination": "gap_um"}
#: Size bins (voxels) of ``recall_by_size``.
RECALL_BINS_VOX = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, np.inf)
MIN_POD_DEFECTS = 10
#: d' of planar defects (cracks, delaminations, mm wide) is computed for a patch of at most this
#: many voxels across: the local decision a reader makes, and a bounded signal grid.
MAX_TASK_EXTENT_VOX = 32


def interface_pairs(cnr_detail: Mapping[str, Mapping[str, Any]], names_to_label: Mapping[str, int],
                    t_grid: np.ndarray, *, min_voxels: int = 2000) -> list[tuple[int, int]]:
    """Touching truth pairs whose phases both hold ``min_voxels``, highest CNR first."""
    pairs = []
    for pair, d in cnr_detail.items():
        a, b = pair.split("/")
        la, lb = names_to_label.get(a), names_to_label.get(b)
        if la is None or lb is None:
            continue
        if min(np.count_nonzero(t_grid == la), np.count_nonzero(t_grid == lb)) < min_voxels:
            continue
        pairs.append((float(d["cnr"]), (la, lb)))
    return [p for _, p in sorted(pairs, key=lambda x: -x[0])]


def edge_blur(vol: np.ndarray, t_grid: np.ndarray, region: np.ndarray, pair: tuple[int, int],
              vs: float, *, depth_vox: int = 6, clearance_vox: int = 3, max_side: int = 96,
              min_side_fraction: float = 0.25) -> dict[str, Any] | None:
    """Blur fitted on the interface between truth labels ``pair`` (a crop of at most
    ``max_side``^3 voxels around the middle of the interface).

    Voxels within ``depth_vox`` of both phases and more than ``clearance_vox`` from any other
    phase (or the edge of the measured region) are fitted; None when the interface is too
    small, one side holds less than ``min_side_fraction`` of them (a one-sided edge, e.g. a
    thin layer of air between the sample and the field of view, biases the fit), or either
    side is thinner than ``depth_vox`` (a 5-voxel Al foil read 1.7 voxel of blur where the
    cathode/separator interface of the same scan read 1.2).
    """
    from recon.image_quality import edge_blur_at_interface

    a, b = pair
    ma, mb = (t_grid == a) & region, (t_grid == b) & region
    contact = ma & slabs.binary_dilation(mb)
    if np.count_nonzero(contact) < 50:
        return None
    where = np.nonzero(contact)
    centre = [int(np.median(i)) for i in where]
    sl = tuple(slice(max(0, c - max_side // 2), c + max_side // 2) for c in centre)
    if np.count_nonzero(contact[sl]) < 50:
        # the median of an interface in several pieces (a layer's two faces) can lie in the
        # middle of one phase, with none of the other in the crop: the contact voxel
        # nearest to it instead
        k = int(np.argmin(sum((i - c) ** 2 for i, c in zip(where, centre))))
        sl = tuple(slice(max(0, int(i[k]) - max_side // 2), int(i[k]) + max_side // 2) for i in where)
    ma, mb, v = ma[sl], mb[sl], vol[sl]
    third = ~(ma | mb)
    d_a, d_b = edt(~ma), edt(~mb)
    d_third = edt(~third) if third.any() else np.full(ma.shape, np.inf, dtype=np.float32)
    near = (ma | mb) & (d_a <= depth_vox) & (d_b <= depth_vox) & (d_third > clearance_vox)
    n_a, n_b = np.count_nonzero(near & ma), np.count_nonzero(near & mb)
    if min(n_a, n_b) < min_side_fraction * (n_a + n_b) or n_a + n_b < 200:
        return None
    # each side must be a phase at least `depth_vox` deep there (a foil thinner than that
    # ends in a third phase within the window, and the two-phase model reads it blurred)
    deep_a = np.count_nonzero(near & ma & (d_b >= depth_vox - 1))
    deep_b = np.count_nonzero(near & mb & (d_a >= depth_vox - 1))
    if min(deep_a / n_a, deep_b / n_b) < 0.1:
        return None
    return edge_blur_at_interface(v, ma, near, vs)


def _eroded_median(vol: np.ndarray, mask: np.ndarray, min_voxels: int = 500) -> float | None:
    core = slabs.binary_erosion(mask, iterations=2)
    if np.count_nonzero(core) < min_voxels:
        return None
    return float(np.median(vol[core]))


def grey_calibration(phase_mu: Mapping[str, float], materials: Mapping[str, Any],
                     kvp: float) -> tuple[float, float] | None:
    """Energy (keV) at which the xraydb attenuation of the thick phases best matches their
    reconstructed medians up to a common offset, and that offset (1/mm).

    Interior scans and cupping shift every phase alike; contrasts are what matter: least
    squares on ``mu - mean(mu)``, then ``offset = mean(reconstructed - table)``, so a phase not
    measured (a crack's electrolyte) reads ``table mu + offset`` on the scan's grey scale. None
    with fewer than two phases.
    """
    from twin.materials import get_material

    names = [n for n, mu in phase_mu.items() if mu is not None and n in materials]
    if len(names) < 2:
        return None
    energies = np.linspace(10.0, max(kvp, 20.0), 301)
    rec = np.array([phase_mu[n] for n in names])
    xr = np.stack([get_material(materials[n]["material"], materials[n]["density_g_cm3"])
                   .mu_per_mm(energies) for n in names])          # (phases, energies)
    cost = (((xr - xr.mean(0)) - (rec - rec.mean())[:, None]) ** 2).sum(0)
    i = int(np.argmin(cost))
    return float(energies[i]), float(rec.mean() - xr[:, i].mean())


def effective_energy_kev(phase_mu: Mapping[str, float], materials: Mapping[str, Any],
                         kvp: float) -> float | None:
    """The energy of :func:`grey_calibration` (None with fewer than two phases)."""
    cal = grey_calibration(phase_mu, materials, kvp)
    return None if cal is None else cal[0]


def phase_medians(vol: np.ndarray, t_grid: np.ndarray, region: np.ndarray,
                  truth: Mapping[str, Any]) -> dict[str, float | None]:
    """Eroded-core median grey of every truth phase that is not a defect (1/mm)."""
    defect_labels = {int(r["label"]) for r in truth.get("defects", []) if "label" in r}
    return {m["name"]: _eroded_median(vol, (t_grid == int(m["label"])) & region)
            for m in truth.get("materials", []) if int(m["label"]) not in defect_labels}


def table_contrast_per_mm(host_name: str, fill_name: str, materials: Mapping[str, Any],
                          energy_kev: float) -> float:
    """``mu_host - mu_fill`` (1/mm) from the material tables at ``energy_kev``."""
    from twin.materials import get_material

    mu = [float(np.ravel(get_material(materials[n]["material"], materials[n]["density_g_cm3"])
                         .mu_per_mm(energy_kev))[0]) for n in (host_name, fill_name)]
    return mu[0] - mu[1]


def recall_by_size(a_vox: np.ndarray, hit: np.ndarray) -> list[dict[str, Any]]:
    """Hit rate per size bin (voxels): ``[{min_vox, max_vox, n, hits, recall}]``."""
    out = []
    for lo, hi in zip(RECALL_BINS_VOX[:-1], RECALL_BINS_VOX[1:]):
        sel = (a_vox >= lo) & (a_vox < hi)
        n = int(sel.sum())
        if n:
            out.append({"min_vox": lo, "max_vox": None if np.isinf(hi) else hi, "n": n,
                        "hits": int(hit[sel].sum()), "recall": float(hit[sel].mean())})
    return out


def pod_for_type(truth_rows: Sequence[Mapping[str, Any]], match: Mapping[str, Any], kind: str,
                 vs: float) -> dict[str, Any]:
    """POD(a) of one defect type from the matching (Firth logit); raw recall by size."""
    from recon.pod import fit_hit_miss, hit_miss_from_match

    key = POD_SIZE_KEY.get(kind, "size_um")
    a, hit = hit_miss_from_match(list(truth_rows), dict(match), types=[kind], size_key=key)
    out: dict[str, Any] = {"size_key": key, "n": int(a.size), "n_hits": int(hit.sum()),
                           "recall_by_size": recall_by_size(a / vs, hit),
                           "a_um": a.tolist(), "hit": hit.astype(int).tolist()}
    at3 = a / vs >= 3.0
    out["recall_at_least_3_vox"] = float(hit[at3].mean()) if at3.any() else None
    if a.size < MIN_POD_DEFECTS or hit.all() or not hit.any():
        out["fit"] = None
        out["note"] = (f"no POD fit: {a.size} defects, {int(hit.sum())} hits (needs >= "
                       f"{MIN_POD_DEFECTS} with both hits and misses)")
        return out
    fit = fit_hit_miss(a, hit, link="logit", method="firth")
    out["fit"] = {k: fit[k] for k in ("beta", "a50", "a90", "a90_95", "link", "method",
                                      "separated") if k in fit}
    out["a50_um"], out["a90_um"], out["a90_95_um"] = fit["a50"], fit["a90"], fit["a90_95"]
    return out


def score_defects(vol: np.ndarray, vs: float, t_grid: np.ndarray, region: np.ndarray,
                  truth: Mapping[str, Any], defects: Mapping[str, Any],
                  cnr_detail: Mapping[str, Mapping[str, Any]], *, kvp: float | None = None
                  ) -> dict[str, Any]:
    """d' per defect type, POD(a) and recall by size, the measured blur (see module doc).

    Parameters
    ----------
    vol : ndarray, shape (nz, ny, nx)
        Reconstruction, 1/mm.
    vs : float
        Voxel, um.
    t_grid : ndarray of int, shape (nz, ny, nx)
        Truth labels on the volume's grid (-1 outside the truth).
    region : ndarray of bool
        Measured region (field of view and truth).
    truth : dict
        ``truth.h5`` content (materials, defects).
    defects : dict
        :func:`twin.measure._defects` result (``truth`` rows in view, ``matched``).
    cnr_detail : dict
        :func:`recon.image_quality.cnr_pairs` of the truth phases.
    kvp : float, optional
        Tube voltage (bounds the effective-energy search); default 160.

    Returns
    -------
    dict
        ``edge_blur`` (pair, sigma_um, ...), ``tasks`` (one per defect type: kind, size_um,
        thickness_um, contrast_per_mm, host, noise_variance, dprime_npw, auc_npw),
        ``pod`` ({type: {...}}), ``effective_energy_kev``.
    """
    from recon.detectability import detectability, gaussian_ttf
    from recon.image_quality import nps_3d

    materials = {m["name"]: m for m in truth.get("materials", [])}
    label_of = {m["name"]: int(m["label"]) for m in truth.get("materials", [])}
    name_of = {v: k for k, v in label_of.items()}
    out: dict[str, Any] = {"tasks": [], "pod": {}}
    blur = None
    pairs = interface_pairs(cnr_detail, label_of, t_grid)[:6]
    # deep, clear interfaces first; then shallower ones (thin foils and layers)
    for depth, clearance in ((6, 3), (4, 2)):
        for pair in pairs:
            blur = edge_blur(vol, t_grid, region, pair, vs, depth_vox=depth, clearance_vox=clearance)
            if blur is not None:
                blur["pair"] = f"{name_of[pair[0]]}/{name_of[pair[1]]}"
                blur["depth_vox"] = depth
                break
        if blur is not None:
            break
    out["edge_blur"] = blur
    ttf = gaussian_ttf(blur["sigma_um"]) if blur else None

    rows = list(defects.get("truth", []))
    match = defects.get("matched") or {}
    types = sorted({str(r.get("type")) for r in rows})
    if not types:
        return out
    defect_labels = {int(r["label"]) for r in rows if "label" in r}
    phase_mu = phase_medians(vol, t_grid, region, truth)
    cal = grey_calibration({n: mu for n, mu in phase_mu.items() if mu}, materials, kvp or 160.0)
    e_eff, offset = cal if cal is not None else (None, 0.0)
    out["effective_energy_kev"] = e_eff
    out["grey_offset_per_mm"] = offset
    defect_zone = slabs.binary_dilation(np.isin(t_grid, list(defect_labels)), iterations=3)
    for kind in types:
        krows = [r for r in rows if str(r.get("type")) == kind]
        if match and kind in ("void", "crack", "delamination"):
            out["pod"][kind] = pod_for_type(rows, match, kind, vs)
        lab = int(krows[0].get("label", -1))
        if lab < 0 or not np.any(t_grid == lab):
            continue
        m = t_grid == lab
        ring = slabs.binary_dilation(m, iterations=2) & ~m & region & (t_grid > 0)
        vals, cnt = np.unique(t_grid[ring & ~np.isin(t_grid, list(defect_labels))],
                              return_counts=True)
        if vals.size == 0:
            continue
        host = int(vals[np.argmax(cnt)])
        host_mask = (t_grid == host) & region
        mu_host = _eroded_median(vol, host_mask, min_voxels=50)
        fill = materials.get(name_of.get(lab, ""), {})
        mu_fill = None
        for name, mu in phase_mu.items():
            if mu is not None and materials.get(name, {}).get("material") == fill.get("material"):
                mu_fill = mu
                break
        if mu_fill is None and fill and e_eff is not None:
            from twin.materials import get_material

            # on the scan's grey scale: an interior scan's greys sit `offset` above the tables
            # (without it a KOH crack in the NiMH paste read 12x its contrast)
            mu_fill = float(np.ravel(get_material(fill["material"], fill["density_g_cm3"])
                                     .mu_per_mm(e_eff))[0]) + offset
        if mu_host is None or mu_fill is None:
            continue
        sizes = np.array([float(r["size_um"]) for r in krows if r.get("size_um")])
        size = float(np.median(sizes))
        task: dict[str, Any] = {"kind": kind, "size_um": min(size, MAX_TASK_EXTENT_VOX * vs),
                                "contrast_per_mm": mu_fill - mu_host}
        if size > task["size_um"]:
            task["median_truth_size_um"] = size
        tk = THICKNESS_KEY.get(kind)
        if tk and any(r.get(tk) for r in krows):
            task["thickness_um"] = float(np.median([float(r[tk]) for r in krows if r.get(tk)]))
        orient = [r.get("orientation") for r in krows if r.get("orientation") is not None]
        if orient:
            task["orientation"] = [float(x) for x in orient[0]]
        clean = slabs.binary_erosion(host_mask, iterations=1) & ~defect_zone
        nps = None
        for roi in (32, 16, 8):
            try:
                # mean (not plane) detrending: a plane fit in small ROIs removes the low
                # frequencies where a small defect's signal lies (d' +8 % on white noise,
                # tests/test_defect_scores.py)
                nps = nps_3d(vol, vs, roi_vox=roi, mask=clean, stride_vox=roi // 2,
                             detrend="mean")
                break
            except XrmInputError:  # no ROI of this size fits inside the host
                continue
        if nps is None:
            continue
        d = detectability(task, vs, nps=nps, mtf=ttf)
        out["tasks"].append({**task, "host": name_of[host], "mu_host_per_mm": mu_host,
                             "mu_fill_per_mm": mu_fill, "nps_roi_vox": int(nps["nps"].shape[0]),
                             "nps_n_rois": int(nps["n_rois"]), "noise_variance": nps["variance"],
                             "ttf_sigma_um": blur["sigma_um"] if blur else None,
                             "dprime_npw": d["dprime_npw"], "auc_npw": d["auc_npw"]})
    return out
