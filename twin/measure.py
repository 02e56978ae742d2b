"""``xrm-twin measure``: segment a reconstruction, measure components, find defects, score.

A thin orchestration of :mod:`recon` (segmentation, metrology, defects, image quality,
detectability, POD) that turns a ``recon.h5`` (or a label file) and, when given, the
``truth.h5`` of the phantom into the ``metrology``, ``defects`` and ``detectability`` parts of
``report.json``.

Component names come from the truth (see :func:`name_classes`); without a truth, the classes
are named ``phase1``, ``phase2``, ...
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from recon import slabs
from recon.segmentation import count_labels
from twin.errors import XrmInputError

#: Components of the truth are segmented as separate classes when they fill at least this
#: fraction of the measured region.
MIN_COMPONENT_FRACTION = 0.002
MAX_CLASSES = 6


def truth_on_grid(truth: Mapping[str, Any], shape_zyx, voxel_size_um: float, origin_mm) -> np.ndarray:
    """Truth labels resampled (nearest voxel centre) onto another grid; -1 outside the truth.

    Returns the smallest signed type that holds the labels plus one (int8 below 127 labels,
    then int16, int32), shape ``shape_zyx``: ``t_grid + 1`` does not overflow.
    """
    lab = truth["labels"]
    tv = np.broadcast_to(np.asarray(truth["voxel_size_um"], float), (3,)) / 1000.0
    to = np.asarray(truth["origin_mm"], float)
    vs = voxel_size_um / 1000.0
    idx = []
    nz, ny, nx = shape_zyx
    centres = [origin_mm[0] + vs * np.arange(nx), origin_mm[1] + vs * np.arange(ny),
               origin_mm[2] + vs * np.arange(nz)]
    for k in range(3):
        i = np.rint((centres[k] - to[k]) / tv[k]).astype(np.int64)
        idx.append(i)
    ix, iy, iz = idx
    tz, ty, tx = lab.shape
    top = int(lab.max(initial=0)) + 1
    dtype = next(t for t in (np.int8, np.int16, np.int32) if top <= np.iinfo(t).max)
    out = np.full(shape_zyx, -1, dtype)
    box = []  # the indices are increasing, so the voxels inside the truth form one box
    for i, n_t in ((iz, tz), (iy, ty), (ix, tx)):
        ok = np.flatnonzero((i >= 0) & (i < n_t))
        if ok.size == 0:
            return out
        box.append((int(ok[0]), int(ok[-1]) + 1))
    (z0, z1), (y0, y1), (x0, x1) = box
    out[z0:z1, y0:y1, x0:x1] = lab[np.ix_(iz[z0:z1], iy[y0:y1], ix[x0:x1])]
    return out


def label_counts(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Voxels of each label >= 0 inside ``region`` (``counts[l]``), slab by slab on the host's
    threads (no full copy; integer counts, so the same on any number of threads)."""
    n = int(labels.max(initial=0)) + 1

    def count(a: int, b: int) -> np.ndarray:
        sel = labels[a:b][region[a:b]]
        return count_labels(sel[sel >= 0], n)[:n]

    return np.sum(slabs.map_planes(count, labels.shape[0], labels.size), axis=0, dtype=np.int64)


def smallest_label_dtype(max_label: int) -> type:
    """uint8, uint16 or int32: the smallest integer type that holds labels 0..max_label."""
    return np.uint8 if max_label < 256 else np.uint16 if max_label < 65536 else np.int32


def field_of_view_mask(shape_zyx, *, margin_vox: int = 2) -> np.ndarray:
    """The reconstructable cylinder of a circular scan (radius = half the grid width)."""
    nz, ny, nx = shape_zyx
    y = np.arange(ny) - (ny - 1) / 2
    x = np.arange(nx) - (nx - 1) / 2
    r = min(nx, ny) / 2 - margin_vox
    disc = (x[None, :] ** 2 + y[:, None] ** 2) <= r * r
    mask = np.broadcast_to(disc, (nz, ny, nx)).copy()
    mask[:margin_vox] = False
    mask[nz - margin_vox:] = False
    return mask


def name_classes(classes: np.ndarray, truth_labels: np.ndarray | None, region: np.ndarray,
                 truth_names: Mapping[int, str] | None, *, roi_margin_vox: int = 2,
                 min_voxels: int = 27, grey: np.ndarray | None = None
                 ) -> tuple[np.ndarray, dict[int, str], dict[str, Any]]:
    """Turn segmentation classes into named components.

    Without a truth, class ``c`` is ``phase{c}``. With a truth, each truth component gets the
    threshold segment that best matches it (largest Dice among ``class == k``,
    ``class >= k`` and ``class <= k``), restricted to a region of interest: the component
    dilated by ``roi_margin_vox``. That is what an analyst does in Dragonfly (histogram
    thresholds, then ROIs refined around each component); the measured error then comes from
    the segmentation (blur, noise, thresholds), not from knowing which voxels are which.

    With ``grey``, each component's threshold is then refined to the local mid-level (the ISO
    50 % edge criterion of dimensional CT): half-way between the median grey of the segment's
    interior and that of its surroundings (a 2-voxel ring just outside the ROI), both read
    from the image.

    Returns the component label volume, ``{label: name}`` and the Dice of each component.
    """
    from scipy import ndimage

    top = max([int(classes.max(initial=0))] + [int(l) for l in (truth_names or {})])
    comp = np.zeros(classes.shape, smallest_label_dtype(top))
    names: dict[int, str] = {}
    dice: dict[str, Any] = {}
    n_classes = int(classes.max(initial=0)) + 1
    if truth_labels is None or truth_names is None:
        for c in range(1, n_classes):
            comp[classes == c] = c
            names[c] = f"phase{c}"
        return comp, names, dice
    struct = ndimage.generate_binary_structure(3, 1)
    # smallest components first: a thin phase embedded in a bulky one (Ni foam in its paste)
    # keeps its voxels; later, bulkier components cannot claim voxels already taken
    counts = label_counts(truth_labels, region)
    sizes = {l: int(counts[l]) if l < counts.size else 0 for l in truth_names if l > 0}
    # each component is worked on inside its bounding box, grown by the ROI margin and the
    # 2-voxel ring plus one: every mask below lies inside it, so the result is the whole
    # array's, at the cost of the box
    boxes = slabs.find_objects(np.where(region, truth_labels, 0))
    margin = int(roi_margin_vox) + 3
    for label in sorted(sizes, key=lambda l: (sizes[l], l)):
        name = truth_names[label]
        n_true = sizes[label]
        if n_true < min_voxels or label > len(boxes) or boxes[label - 1] is None:
            continue
        box = tuple(slice(max(b.start - margin, 0), min(b.stop + margin, n))
                    for b, n in zip(boxes[label - 1], classes.shape))
        cls, rg, cp = classes[box], region[box], comp[box]  # cp is a view: writes go to comp
        gr = None if grey is None else grey[box]
        tl = truth_labels[box]
        nz_box, size = cls.shape[0], cls.size
        # the masks below are built a few planes at a time on the host's threads
        # (slabs.map_planes: element-wise numpy, each range writing its own planes)
        truth_c = np.empty(cls.shape, bool)
        slabs.map_planes(lambda a, b: np.logical_and(tl[a:b] == label, rg[a:b], out=truth_c[a:b]),
                         nz_box, size)
        roi = slabs.binary_dilation(truth_c, struct, iterations=roi_margin_vox)
        free_roi = np.empty(cls.shape, bool)

        def free_counts(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
            """The ROI in the region, its free part, and the free ROI's class histograms."""
            roi[a:b] &= rg[a:b]
            free = np.logical_and(roi[a:b], cp[a:b] == 0, out=free_roi[a:b])
            cls_free = cls[a:b][free]
            return (count_labels(cls_free, n_classes)[:n_classes],
                    count_labels(cls_free[truth_c[a:b][free]], n_classes)[:n_classes])

        # Dice of every candidate segment (class == k, >= k, <= k, inside the free ROI) from
        # two class histograms instead of a mask per candidate (integer counts: the same sums
        # on any number of threads)
        hists = slabs.map_planes(free_counts, nz_box, size)
        n_all = np.sum([h[0] for h in hists], axis=0, dtype=np.int64)
        n_hit = np.sum([h[1] for h in hists], axis=0, dtype=np.int64)
        best_d, best_sel = -1.0, None
        for k in range(1, n_classes):
            for sel in (slice(k, k + 1), slice(k, None), slice(0, k + 1)):  # ==, >=, <=
                d = 2.0 * int(n_hit[sel].sum()) / (int(n_all[sel].sum()) + n_true)
                if d > best_d:
                    best_d, best_sel = d, sel
        if best_sel is None or best_d <= 0.0:
            continue
        lo_k, hi_k = best_sel.start, (n_classes if best_sel.stop is None else best_sel.stop)
        seg_c = np.empty(cls.shape, bool)
        slabs.map_planes(lambda a, b: np.logical_and(free_roi[a:b], (cls[a:b] >= lo_k) & (cls[a:b] < hi_k),
                                                     out=seg_c[a:b]), nz_box, size)
        best = (best_d, seg_c)
        if gr is not None:
            inner = slabs.binary_erosion(seg_c, struct)
            # the surroundings: a 2-voxel ring just outside the ROI. (A ring inside the ROI
            # but outside the segment is empty or unrepresentative when the best threshold
            # segment already fills the ROI: it put the Ni foam's level at 0.85 instead of
            # 0.95 /mm at 3.62 um and read the foam 15 % thick.)
            outer = slabs.binary_dilation(roi, struct, iterations=2)
            slabs.map_planes(lambda a, b: np.logical_and(outer[a:b], rg[a:b] & ~roi[a:b], out=outer[a:b]),
                             nz_box, size)
            if np.count_nonzero(inner) >= 8 and np.count_nonzero(outer) >= 8:
                # the medians partition their gathered copies in place: one copy each
                mu_in = float(np.median(slabs.masked_values(gr, inner), overwrite_input=True))
                mu_out = float(np.median(slabs.masked_values(gr, outer), overwrite_input=True))
                del inner, outer
                mid = 0.5 * (mu_in + mu_out)
                refined = np.empty(cls.shape, bool)

                def refine(a: int, b: int) -> int:
                    """The free ROI on the segment's side of the mid-level; its truth overlap."""
                    side = (gr[a:b] > mid) if mu_in > mu_out else (gr[a:b] < mid)
                    r = np.logical_and(free_roi[a:b], side, out=refined[a:b])
                    return int(np.count_nonzero(r & truth_c[a:b]))

                inter = sum(slabs.map_planes(refine, nz_box, size))
                best = (2.0 * inter / (np.count_nonzero(refined) + n_true), refined)
        seg = best[1]

        def claim(a: int, b: int) -> None:
            """The chosen segment's voxels that no earlier (smaller) component holds."""
            part = cp[a:b]
            part[seg[a:b] & (part == 0)] = label

        slabs.map_planes(claim, nz_box, size)
        names[label] = name
        dice[name] = float(best[0])
    return comp, names, dice


def measure(volume: np.ndarray, voxel_size_um: float, origin_mm, *, truth: Mapping[str, Any] | None = None,
            classes: int | None = None, thickness: bool = True, min_island_voxels: int = 8,
            detect: bool = True, smooth_sigma_vox: float = 1.0, kvp: float | None = None,
            thickness_maps: Sequence[str] | None = None,
            undenoised: np.ndarray | None = None) -> dict[str, Any]:
    """Measure a reconstructed volume (and score it against the truth when given).

    Segmentation runs on the volume smoothed by a Gaussian of ``smooth_sigma_vox`` voxels (noise
    would otherwise fragment thin phases); CNR and defect detection use the volume as given.

    Returns
    -------
    dict with ``metrology`` ({name: {volume_mm3, surface_mm2, surface_to_volume_per_mm,
    thickness_um {mean, std, ...}}}), ``metrology_truth`` (same on the truth, when given),
    ``segmentation`` (thresholds, classes, names), ``defects`` ({truth, detected, matched}),
    ``detectability`` ({cnr: {"a/b": value}, ...}; with a truth also ``tasks`` (d' per
    defect type), ``pod``, ``edge_blur``: :func:`twin.defect_scores.score_defects`),
    ``labels`` (component volume), ``truth_labels`` and ``truth_names`` (the truth on the
    volume's grid, when given), ``thickness_maps`` ({name: (map_um, voxel_um)} for
    ``thickness_maps``, default the component with the highest surface-to-volume ratio among
    those of at least 1000 voxels that are not truth defects), ``timing_s``.

    ``kvp`` (tube voltage) bounds the effective-energy search of the contrast model.
    ``undenoised`` (the reconstruction before a denoiser, ``recon.h5`` ``/volume_undenoised``)
    is where large faint cracks are searched (:mod:`recon.plane_filter`).
    """
    from recon import image_quality, metrology, segmentation

    t0 = time.perf_counter()
    vol = np.asarray(volume, np.float32)
    if vol.ndim != 3:
        raise XrmInputError(f"volume must be 3-D [z, y, x], got shape {vol.shape}")
    if not np.all(np.isfinite(vol)):
        raise XrmInputError("volume has non-finite values")
    vs = float(np.asarray(voxel_size_um).ravel()[0])
    if np.size(voxel_size_um) == 3 and len(set(np.asarray(voxel_size_um, float).tolist())) > 1:
        raise XrmInputError(f"anisotropic voxels {voxel_size_um} um: metrology needs isotropic voxels "
                            "(resample first)")
    region = field_of_view_mask(vol.shape)
    t_grid = t_names = None
    if truth is not None:
        t_grid = truth_on_grid(truth, vol.shape, vs, origin_mm)
        region &= t_grid >= 0
        if not region.any():
            raise XrmInputError("the truth does not overlap the reconstructed volume: "
                                "a truth file from another grid or sample position?")
        t_names = {int(m["label"]): m["name"] for m in truth.get("materials", [])}
    if classes is None:
        if t_grid is not None:
            counts = label_counts(t_grid, region)
            lab = np.flatnonzero(counts)
            cnt = counts[lab]
            mus = [truth_mu_key(truth, int(l)) for l in lab]
            frac = cnt / cnt.sum()
            distinct = {round(m, 2) for m, f in zip(mus, frac) if f >= MIN_COMPONENT_FRACTION}
            classes = int(np.clip(len(distinct), 2, MAX_CLASSES))
        else:
            classes = 3

    smooth = slabs.gaussian_filter(vol, smooth_sigma_vox) if smooth_sigma_vox > 0 else vol
    seg, thresholds = segmentation.segment_multiotsu(smooth, classes, mask=region,
                                                     min_island_voxels=min_island_voxels)
    comp, names, dice = name_classes(seg, t_grid, region, t_names, grey=smooth)
    del smooth, seg  # the largest arrays of the segmentation: freed before the metrology
    out: dict[str, Any] = {"segmentation": {"classes": classes, "smooth_sigma_vox": smooth_sigma_vox,
                                            "thresholds_per_mm": [float(t) for t in thresholds],
                                            "components": {str(k): v for k, v in names.items()},
                                            "dice": dice}}
    # defects first: the crack search holds the stage's memory peak, and the thickness maps
    # are not alive yet; the defect map is painted at the end from the detections' voxels
    detected_voxels: list = []
    if t_grid is not None:
        # labels shifted by one so that 0 is "outside the measured region", not air: in an
        # interior scan the truth's air is only what lies inside the field of view
        counts = label_counts(t_grid, region)
        seen = {int(l) for l in np.flatnonzero(counts)}
        present = {l: n for l, n in t_names.items() if l > 0 and l in seen}
        in_region = {l: n for l, n in {0: "air", **present}.items() if l in seen}
        shifted = np.where(region, t_grid + 1, 0)
        cnr = image_quality.cnr_pairs(vol, shifted, {l + 1: n for l, n in in_region.items()},
                                      include_background=False)
        del shifted
        out["detectability"] = {"cnr": {k: float(v["cnr"]) for k, v in cnr.items()},
                                "cnr_detail": cnr}
        raw = vol if undenoised is None else np.asarray(undenoised, np.float32)
        if raw.shape != vol.shape:
            raise XrmInputError(f"undenoised volume {raw.shape} and volume {vol.shape} differ")
        out["defects"] = _defects(vol, vs, origin_mm, truth, t_grid, region, detect, comp,
                                  raw=raw, kvp=kvp)
        detected_voxels = out["defects"].pop("_voxels")
        from twin.defect_scores import score_defects

        out["detectability"].update(score_defects(vol, vs, t_grid, region, truth, out["defects"],
                                                  cnr, kvp=kvp))
    else:
        cnr = image_quality.cnr_pairs(vol, comp, {0: "background", **names})
        out["detectability"] = {"cnr": {k: float(v["cnr"]) for k, v in cnr.items()}, "cnr_detail": cnr}
        out["defects"] = {"truth": [], "detected": [], "matched": {}}
    # surfaces: marching cubes on the smoothed segmented mask (the grey-level surface picks up
    # noise inside multi-phase components)
    if thickness_maps is None:
        defect_labels = {int(r["label"]) for r in (truth or {}).get("defects", []) if "label" in r}
        thickness_maps = (_thinnest_component(comp, {l: n for l, n in names.items()
                                                     if l not in defect_labels}, vs)
                          if thickness else [])
    out["metrology"] = metrology.measure_components(comp, vs, names, thickness=thickness,
                                                    allow_missing=True, return_maps=thickness_maps)
    out["thickness_maps"] = {}
    for name, rec in out["metrology"].items():
        if "thickness_map_um" in rec:
            out["thickness_maps"][name] = (rec.pop("thickness_map_um"), rec["thickness_um"]["voxel_um"])
    if t_grid is not None:
        tg = np.where(region, t_grid, 0)
        out["metrology_truth"] = metrology.measure_components(tg, vs, present, thickness=thickness,
                                                              allow_missing=True)
        del tg
    out["defect_map"] = defect_map_of([{"_voxels": x} for x in detected_voxels], vol.shape)
    out["labels"] = comp
    if t_grid is not None:  # the truth on the volume's grid, 0 outside the measured region
        out["truth_labels"] = np.where(region, t_grid, 0).astype(np.int16 if t_grid.dtype == np.int8
                                                                  else t_grid.dtype)
        out["truth_names"] = {l: n for l, n in t_names.items() if l > 0}
    out["timing_s"] = {"measure": time.perf_counter() - t0}
    return out


def _thinnest_component(comp: np.ndarray, names: Mapping[int, str], vs: float,
                        min_voxels: int = 1000) -> list[str]:
    """The component with the highest surface-to-volume ratio (a foam, foil or separator: the
    one whose thickness map is worth looking at), by a cheap voxel-face estimate."""
    best, best_sv = [], 0.0
    for lab, name in names.items():
        m = comp == lab
        n = int(np.count_nonzero(m))
        if n < min_voxels:
            continue
        faces = sum(int(np.count_nonzero(np.diff(m, axis=k))) for k in range(3))
        if faces / n > best_sv:
            best, best_sv = [name], faces / n
    return best


def truth_mu_key(truth: Mapping[str, Any], label: int) -> float:
    """A grey-level key of a truth label (its density), used to count distinct phases."""
    for m in truth.get("materials", []):
        if int(m["label"]) == label:
            return float(m["density_g_cm3"])
    return float(label)


def _neighbour_labels(t_grid: np.ndarray, label: int, min_share: float = 0.1) -> list[int]:
    """Truth labels around the voxels of ``label`` (the phases a defect sits in or between)."""

    m = t_grid == label
    ring = slabs.binary_dilation(m) & ~m
    vals, counts = np.unique(t_grid[ring], return_counts=True)
    keep = (vals > 0) & (counts >= min_share * counts.sum())
    return [int(v) for v in vals[keep]]


def _defects(vol, vs, origin_mm, truth, t_grid, region, detect: bool, comp=None, *,
             raw=None, kvp=None) -> dict[str, Any]:
    """Detect voids, cracks and delaminations where the truth has them, and match.

    The search region of each defect type comes from the phases around the truth defects (an
    analyst knows which electrode to inspect); what is found there comes from the image.
    Cracks: the planar matched filter on ``raw`` (the undenoised volume), with the crack
    volume's contrast from the material tables at the scan's effective energy (the host and
    the fill are known materials; their greys are not), then the voxel-scale Hessian for the
    small ones it does not cover.

    Returns ``{truth, detected, matched, n_truth_in_view, n_truth_total, _voxels}``:
    ``_voxels[i]`` the flat voxel indices of ``detected[i]`` (or ``None``), for
    :func:`defect_map_of`.
    """
    from recon import defects as dmod

    rows = list(truth.get("defects", []))
    visible = []
    vs_mm = vs / 1000.0
    for r in rows:
        c = np.asarray(r.get("center_mm", (np.nan,) * 3), float)
        idx = np.rint((c - np.asarray(origin_mm)) / vs_mm).astype(int)[::-1]
        if np.all(idx >= 0) and np.all(idx < np.array(vol.shape)) and region[tuple(idx)]:
            visible.append(r)
    detected: list[dict] = []
    energy: dict[str, float | None] = {}

    def contrast_of(label: int, hosts: Sequence[int]) -> float | None:
        if "kev" not in energy:  # fitted once, where a defect needs it
            energy["kev"] = scan_energy_kev(vol if raw is None else raw, t_grid, region, truth, kvp)
        return fill_contrast(t_grid, truth, label, hosts, energy["kev"])

    if detect and visible:
        by_type: dict[str, set[int]] = {}
        for r in visible:
            by_type.setdefault(str(r.get("type")), set()).add(int(r.get("label", -1)))
        # every defect label: a host electrode includes its cracks and voids (cracks cut
        # through the host otherwise, and the search margin along them hid the voids they
        # start from)
        all_defect_labels = sorted({lab for labels in by_type.values() for lab in labels if lab >= 0})
        for kind, labels in by_type.items():
            for lab in labels:
                if lab < 0 or not np.any(t_grid == lab):
                    continue
                around = _neighbour_labels(t_grid, lab)
                host = (np.isin(t_grid, around) | np.isin(t_grid, all_defect_labels)) & region
                if kind == "void":
                    # a whole-electrode search: split touching blobs at their minima, and a
                    # threshold for a million-voxel search (recon.defects.detect_voids)
                    found = dmod.detect_voids(vol, host, vs, origin_mm=origin_mm, split=True,
                                              k_sigma=4.5, return_voxels=True)
                    contrast = contrast_of(lab, around) if found else None
                    for d in found:
                        d["contrast_mu"] = contrast
                    detected += found
                elif kind == "crack":
                    detected += _cracks(vol if raw is None else raw, vol, host, vs, origin_mm,
                                        t_grid, region, contrast_of(lab, around))
                elif kind == "delamination" and comp is not None and len(around) >= 2:
                    sizes = {a: slabs.count_equal(t_grid, a) for a in around}
                    foil = min(sizes, key=sizes.get)  # the thinner side is the current collector
                    active = [a for a in around if a != foil]
                    found = dmod.detect_delamination(np.where(region, comp, 0), active, foil, vs,
                                                     origin_mm=origin_mm, axis=None,
                                                     return_voxels=True)
                    contrast = contrast_of(lab, active) if found else None
                    for d in found:
                        d["contrast_mu"] = contrast
                    detected += found
    matched = dmod.match_defects(detected, visible, vs) if visible else {}
    voxels = [d.get("_voxels") for d in detected]
    detected = [{k: v for k, v in d.items() if not k.startswith("_")} for d in detected]
    return {"truth": visible, "detected": detected, "matched": matched,
            "n_truth_in_view": len(visible), "n_truth_total": len(rows), "_voxels": voxels}


def defect_map_of(detected: Sequence[Mapping[str, Any]], shape_zyx) -> np.ndarray:
    """The voxels of each detection (their ``_voxels``): row ``i`` of ``detected`` is value
    ``i + 1``, 0 elsewhere (uint16; int32 past 65535 rows). Written to ``segmentation.h5``
    ``/defects``, where ``xrm-twin compare`` reads it."""
    out = np.zeros(tuple(int(n) for n in shape_zyx), np.uint16 if len(detected) < 65535 else np.int32)
    flat = out.reshape(-1)
    for i, d in enumerate(detected, start=1):
        vox = d.get("_voxels")
        if vox is not None and len(vox):
            flat[np.asarray(vox, np.int64)] = i
    return out


def fill_contrast(t_grid, truth, label: int, hosts: Sequence[int],
                  energy_kev: float | None) -> float | None:
    """Table contrast ``mu_host - mu_fill`` (1/mm) of a defect label against the largest of its
    ``hosts`` at the scan's effective energy (:func:`scan_energy_kev`); ``None`` where a
    material or the energy is missing, or the contrast is not positive. The host and the fill
    are known materials; their greys in the scan are not (the fill is too thin to measure)."""
    from twin.defect_scores import table_contrast_per_mm

    materials = {m["name"]: m for m in truth.get("materials", [])}
    name_of = {int(m["label"]): m["name"] for m in truth.get("materials", [])}
    hosts = [a for a in hosts if a != label and name_of.get(a) in materials]
    if energy_kev is None or not hosts or name_of.get(label) not in materials:
        return None
    host = max(hosts, key=lambda a: slabs.count_equal(t_grid, a))
    c = table_contrast_per_mm(name_of[host], name_of[label], materials, energy_kev)
    return float(c) if c is not None and c > 0 else None


def scan_energy_kev(raw, t_grid, region, truth, kvp: float | None) -> float | None:
    """Effective energy of the scan (keV) fitted to the thick phases' greys
    (:func:`twin.defect_scores.grey_calibration`), or ``None``."""
    from twin.defect_scores import grey_calibration, phase_medians

    materials = {m["name"]: m for m in truth.get("materials", [])}
    cal = grey_calibration({n: m for n, m in phase_medians(raw, t_grid, region, truth).items() if m},
                           materials, kvp or 160.0)
    return None if cal is None else float(cal[0])


def _cracks(raw, vol, host, vs, origin_mm, t_grid, region, contrast):
    """Planar cracks (:func:`recon.plane_filter.detect_planar_cracks` on the undenoised
    volume, volumes with the table ``contrast``), then Hessian cracks
    (:func:`recon.defects.detect_cracks`) away from them."""
    from recon import defects as dmod
    from recon.plane_filter import detect_planar_cracks

    small = dmod.detect_cracks(vol, host, vs, origin_mm=origin_mm, return_voxels=True)
    rows: list[dict] = []
    try:
        # the caller's per-label host, not used after: extended in its own array (the planar
        # search holds its working set, a copy would be a mask more at the stage's peak)
        rows = detect_planar_cracks(raw, _with_embedded(host, t_grid, region, in_place=True), vs,
                                    origin_mm=origin_mm, contrast_mu=contrast, return_voxels=True)
    except XrmInputError:  # a host thinner than the filter's reach: the Hessian alone
        rows = []
    for d in small:
        c = np.asarray(d["center_mm"], float)
        inside = False
        for p in rows:
            n = np.asarray(p["orientation"], float)
            off = c - np.asarray(p["center_mm"], float)
            across = abs(float(off @ n)) * 1000.0
            along = float(np.linalg.norm(off - (off @ n) * n)) * 1000.0
            inside |= across <= 3.0 * vs and along <= 0.5 * float(p["size_um"])
        if not inside:
            d["contrast_mu"] = contrast
            rows.append(d)
    return rows


def _with_embedded(host: np.ndarray, t_grid: np.ndarray, region: np.ndarray,
                   min_share: float = 0.6, *, in_place: bool = False) -> np.ndarray:
    """The host with the phases embedded in it (Ni foam in its paste): labels whose outer
    boundary lies at least ``min_share`` in the host. The planar filter needs the electrode
    whole; without its foam the paste is a sponge that the filter's reach erodes away (the
    NiMH crack came out in two halves with 0.21 of its 0.29 mm^2). ``in_place``: the
    embedded phases are added to ``host`` itself (bool array), which is returned."""

    embedded = []  # judged against the host as given, before any phase is added
    for lab in np.unique(t_grid[region & ~host]):
        if lab <= 0:
            continue
        m = (t_grid == lab) & region
        ring = slabs.binary_dilation(m) & ~m & region
        n = np.count_nonzero(ring)
        if n and np.count_nonzero(ring & host) >= min_share * n:
            embedded.append(lab)
    out = host if in_place else host.copy()
    for lab in embedded:
        out |= (t_grid == lab) & region
    return out
