"""Stand-ins for the files the ``ctsimu`` package's 2D-test scenarios reference but do not ship.

The package carries the scenario JSONs of 2D-FB-1, -FB-2, -HS-1, -WE-1, -WE-2 and -DW-1 but
not their STL models or spectrum CSVs. :func:`prepare_test_folder` copies a scenario into a
folder and writes reconstructions of them, derived from the toolbox's evaluation code:

* spectra: SpekPy for the scenario's target, voltage and emission angle, filtered by the
  window (photons / (s sr mA));
* ``Halbraumkante`` (WE-1, WE-2): a tungsten block whose corner sits on the central ray,
  edges tilted by 3 deg, side faces through the source (so the shadow does not depend on
  the depth), bounding-box centre as in the scenario;
* ``Lochfolie`` (HS-1): a tungsten foil with ten holes, placed by ray casting so that the
  holes project onto the nominal pixel positions of the evaluation (big hole at
  (-160, -140) mm, the others on a 205 mm grid, in the detector plane);
* ``DuplexWire`` (DW-1): 13 platinum wire pairs (ISO 19232-5 diameters 0.8 ... 0.05 mm,
  gap = diameter), 15 mm long, tilted by 3 deg, centred on the evaluation's profile.

These are our reconstructions, not the originals; ``docs/validation.md`` says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from twin.atomic import atomic_path

DUPLEX_SPACINGS_MM = (0.8, 0.63, 0.5, 0.4, 0.32, 0.25, 0.2, 0.16, 0.13, 0.1, 0.08, 0.063, 0.05)
#: Nominal hole centres (y, z) in the detector plane (mm) and their radius in pixels (the
#: evaluation's); the foil's holes are 0.5 mm (big) and 0.25 mm in radius.
HOLES_DETECTOR_MM = [(-160, -140, 133)] + [(y, z, 66) for z in (205, 0, -205) for y in (205, 0, -205)]


def _write_stl(path: Path, triangles: np.ndarray) -> None:
    import trimesh

    m = trimesh.Trimesh(vertices=triangles.reshape(-1, 3), faces=np.arange(len(triangles) * 3).reshape(-1, 3),
                        process=True)
    m.merge_vertices()
    if m.volume < 0:
        m.invert()
    with atomic_path(path) as tmp:
        m.export(tmp, file_type="stl")


def _rot_x(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def edge_block_triangles(centre_vw_mm: tuple[float, float] = (2.5, -2.36898), depth_mm: float = 2.0,
                         tilt_deg: float = 3.0, tilt2_deg: float | None = None,
                         source_distance_mm: float = 500.0) -> np.ndarray:
    """The WE tests' tungsten edge: a frustum whose side faces all contain the source point.

    In the stage frame (u along the beam, source at ``u = -source_distance_mm``) the corner
    line is the central ray; the two edges leave the corner along ``(cos t1, sin t1)`` and
    ``(sin t2, -cos t2)`` in (v, w) (``t1 = tilt_deg``, ``t2 = tilt2_deg``, default the same),
    so the shadow is the quadrant of the evaluation's analytical image whatever the depth.
    In 2D-WE-1/2 (stage ``v`` = world ``y`` = detector ``-u``, stage ``w`` = world ``z`` =
    detector ``-v``) the ``t1`` edge is the image's near-horizontal edge and the ``t2`` edge
    its near-vertical one (:func:`edge_shadow_coverage` takes the tilts in the same order).
    The back face (the largest) has the width ``a`` and height ``b`` that put the bounding-box
    centre at ``(0, *centre_vw_mm)`` relative to the corner:
    ``a cos t1 + b sin t2 = 2 c_v`` and ``a sin t1 - b cos t2 = 2 c_w`` (the scenario's
    placement point; (2.5, -2.36898) mm in 2D-WE-1/2 gives a = 4.74518, b = 4.99315 mm at
    3 deg). The reader moves that centre to ``position.center``, so the corner lands on the
    central ray exactly.
    """
    import trimesh

    t1 = np.deg2rad(tilt_deg)
    t2 = np.deg2rad(tilt_deg if tilt2_deg is None else tilt2_deg)
    e1 = np.array([0.0, np.cos(t1), np.sin(t1)])
    e2 = np.array([0.0, np.sin(t2), -np.cos(t2)])
    cv, cw = centre_vw_mm
    a_back, b_back = np.linalg.solve([[np.cos(t1), np.sin(t2)], [np.sin(t1), -np.cos(t2)]], [2 * cv, 2 * cw])
    if a_back <= 0 or b_back <= 0:
        raise ValueError(f"no edge block has its bounding-box centre at {centre_vw_mm} mm")
    h = depth_mm / 2
    back = (source_distance_mm + h) / source_distance_mm
    a, b = a_back / back, b_back / back
    verts = []
    for u in (-h, h):
        s = (source_distance_mm + u) / source_distance_mm
        for al, be in ((0, 0), (a, 0), (a, b), (0, b)):
            verts.append(np.array([u, 0.0, 0.0]) + s * (al * e1 + be * e2))
    hull = trimesh.Trimesh(vertices=np.array(verts)).convex_hull
    return np.asarray(hull.triangles)


def edge_shadow_coverage(rows: int, cols: int, tilt_deg: float = 3.0,
                         tilt2_deg: float | None = None) -> np.ndarray:
    """Exact covered fraction of each pixel by the shadow of :func:`edge_block_triangles`.

    The shadow on the 2D-WE-2 detector is a quadrant with its corner on the detector centre.
    In image coordinates (x = column, y = row, pixel units) it is ``{a e_h + b e_v: a, b >= 0}``
    with the near-horizontal edge ``e_h = (-cos t1, -sin t1)`` (``t1 = tilt_deg``, the block's
    ``tilt_deg`` edge along stage ``v``) and the near-vertical edge ``e_v = (-sin t2, cos t2)``
    (``t2 = tilt2_deg``, default ``t1``; the block's ``tilt2_deg`` edge along stage ``w``):
    pass the same tilts as to :func:`edge_block_triangles`. Each pixel square is clipped by
    the two half-planes (Sutherland-Hodgman) and its remaining area taken. For 2D-WE-2 the
    solid angle varies by less than 1e-6 across a pixel, so this is the intensity fraction the
    toolbox's analytical image should show. Returns an array (rows, cols) in [0, 1].
    """
    t1 = np.deg2rad(tilt_deg)
    t2 = t1 if tilt2_deg is None else np.deg2rad(tilt2_deg)
    e_h = np.array([-np.cos(t1), -np.sin(t1)])
    e_v = np.array([-np.sin(t2), np.cos(t2)])
    # each half-plane n . p <= 0 is bounded by the line of one edge and holds the other edge
    normals = []
    for along, other in ((e_h, e_v), (e_v, e_h)):
        n = np.array([along[1], -along[0]])  # perpendicular to the edge's line
        normals.append(n if n @ other < 0 else -n)
    r, c = np.meshgrid(np.arange(rows, dtype=float), np.arange(cols, dtype=float), indexing="ij")
    x0, y0 = c - cols / 2.0, r - rows / 2.0
    corners = [(x0, y0), (x0 + 1, y0), (x0 + 1, y0 + 1), (x0, y0 + 1)]
    f = [np.stack([n[0] * x + n[1] * y for x, y in corners]) for n in normals]
    cov = np.where((f[0].max(0) <= 0) & (f[1].max(0) <= 0), 1.0, 0.0)
    cut = ~((f[0].max(0) <= 0) & (f[1].max(0) <= 0)) & (f[0].min(0) < 0) & (f[1].min(0) < 0)
    for i, j in np.argwhere(cut):
        poly = [np.array(p) for p in ((x0[i, j], y0[i, j]), (x0[i, j] + 1, y0[i, j]),
                                      (x0[i, j] + 1, y0[i, j] + 1), (x0[i, j], y0[i, j] + 1))]
        for n in normals:
            out = []
            for k in range(len(poly)):
                p, q = poly[k], poly[(k + 1) % len(poly)]
                fp, fq = n @ p, n @ q
                if fp <= 0:
                    out.append(p)
                if fp * fq < 0:
                    out.append(p + fp / (fp - fq) * (q - p))
            poly = out
        if len(poly) >= 3:
            x, y = np.array(poly).T
            cov[i, j] = 0.5 * abs(x @ np.roll(y, -1) - y @ np.roll(x, -1))
    return cov


def plate_with_holes(size_mm: float, thickness_mm: float, holes: list[tuple[float, float, float]],
                     n_circle: int = 160) -> np.ndarray:
    """Triangles of a square plate in the (y, z) plane, thickness along x, with round holes."""
    import trimesh
    from scipy.spatial import Delaunay

    pts = []
    h = size_mm / 2
    edge = np.linspace(-h, h, 81)
    for t in edge[:-1]:
        pts += [(t, -h), (h, t), (-t, h), (-h, -t)]
    ang = np.linspace(0, 2 * np.pi, n_circle, endpoint=False)
    for y, z, r in holes:
        pts += list(zip(y + r * np.cos(ang), z + r * np.sin(ang)))
    g = np.linspace(-h, h, 121)[1:-1]
    gy, gz = np.meshgrid(g, g)
    cand = np.stack([gy.ravel(), gz.ravel()], 1)
    ok = np.ones(len(cand), bool)
    for y, z, r in holes:
        ok &= np.hypot(cand[:, 0] - y, cand[:, 1] - z) > r + 2 * (g[1] - g[0])
    pts = np.array(pts + [tuple(p) for p in cand[ok]])
    tri = Delaunay(pts).simplices
    c = pts[tri].mean(axis=1)
    keep = np.ones(len(tri), bool)
    for y, z, r in holes:
        keep &= np.hypot(c[:, 0] - y, c[:, 1] - z) > r
    mesh = trimesh.creation.extrude_triangulation(pts, tri[keep], height=thickness_mm)
    v = mesh.vertices
    mesh.vertices = np.stack([v[:, 2] - thickness_mm / 2, v[:, 0], v[:, 1]], 1)  # x = thickness
    if not mesh.is_watertight:
        raise RuntimeError("hole plate mesh is not watertight")
    if mesh.volume < 0:
        mesh.invert()
    return np.asarray(mesh.triangles)


def hole_foil_triangles(scenario: dict, thickness_mm: float = 0.1) -> np.ndarray:
    """The HS-1 foil with holes placed so that they project onto the evaluation's nominal spots."""
    from twin.ctsimu import frames as fr

    geo = scenario["geometry"]
    world = fr.AxisContext(None, True)
    src = fr.apply_deviations(fr.placement(geo["source"], "source")[0], geo["source"].get("deviations"), world, "s")
    det = fr.apply_deviations(fr.placement(geo["detector"], "detector")[0], geo["detector"].get("deviations"), world, "d")
    stage = fr.stage_frame_at(fr.placement(geo["stage"], "stage")[0], geo["stage"].get("deviations"), 0.0)
    s = scenario["samples"][0]
    frame, _ = fr.placement(s["position"], "sample", sample=True)
    frame = fr.apply_deviations(frame, s["position"].get("deviations"), fr.AxisContext(stage, False), "sample")
    # sample frame in world coordinates
    c_w = stage.to_reference(frame.center)
    b_w = frame.basis @ stage.basis
    normal = b_w[0]
    holes = []
    for y, z, r_px in HOLES_DETECTOR_MM:
        p_det = det.center + (-y) * det.basis[0] + (-z) * det.basis[1]
        d = p_det - src.center
        t = ((c_w - src.center) @ normal) / (d @ normal)
        q = src.center + t * d
        local = (q - c_w) @ b_w.T
        holes.append((local[1], local[2], 0.5 if r_px > 100 else 0.25))
    size = 2.0 * (max(max(abs(y), abs(z)) for y, z, _ in holes) + 1.5)
    return plate_with_holes(size, thickness_mm, holes)


def duplex_wire_triangles(length_mm: float = 15.0, pitch_mm: float = 3.9, tilt_deg: float = 3.0,
                          center_yz_mm: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """13 platinum wire pairs (image left to right = -y), wires along z, tilted about x.

    The pattern's centre sits at ``center_yz_mm`` relative to the model's bounding-box centre
    (the CTSimU placement point): a 20 um marker cube beside the pattern extends the bounding
    box accordingly, as the original model's bounding box is off the evaluation's ROI.
    """
    import trimesh

    tris = []
    n = len(DUPLEX_SPACINGS_MM)
    for k, d in enumerate(DUPLEX_SPACINGS_MM):
        yc = (k - (n - 1) / 2) * pitch_mm
        for sgn in (-1, 1):
            cyl = trimesh.creation.cylinder(radius=d / 2, height=length_mm, sections=64)
            cyl.apply_translation([0.0, -(yc + sgn * d), 0.0])
            tris.append(np.asarray(cyl.triangles))
    tri = np.concatenate(tris) @ _rot_x(tilt_deg).T
    flat = tri.reshape(-1, 3)
    lo, hi = flat.min(0), flat.max(0)
    marker = np.zeros(3)
    for ax, c in ((1, center_yz_mm[0]), (2, center_yz_mm[1])):
        want = -c  # bounding-box centre relative to the pattern centre
        mid = 0.5 * (lo[ax] + hi[ax])
        if abs(want - mid) < 1e-9:
            marker[ax] = mid
        else:
            marker[ax] = 2 * want - (lo[ax] if want > mid else hi[ax])
    cube = trimesh.creation.box(extents=[0.02, 0.02, 0.02])
    cube.apply_translation(marker)
    return np.concatenate([tri, np.asarray(cube.triangles)])


#: Centre of the duplex-wire region of interest of the DW-1 evaluation, image pixels (x, y).
DUPLEX_ROI_CENTRE_PX = (1126.0, 496.0)


def _duplex_centre_mm(scenario: dict) -> tuple[float, float]:
    """(y, z) of the wire pattern in the stage plane so that it projects on the ROI centre."""
    det = scenario["detector"]
    cols, rows = det["columns"]["value"], det["rows"]["value"]
    pitch = det["pixel_pitch"]["u"]["value"]
    sdd = scenario["geometry"]["detector"]["center"]["x"]["value"]
    sod = scenario["geometry"]["stage"]["center"]["x"]["value"]
    du = (DUPLEX_ROI_CENTRE_PX[0] - (cols - 1) / 2) * pitch * sod / sdd
    dv = (DUPLEX_ROI_CENTRE_PX[1] - (rows - 1) / 2) * pitch * sod / sdd
    return -du, -dv  # detector u = -y, v = -z


def _spectrum_for(scenario: dict, path: Path) -> None:
    from twin.ctsimu.reader import read_materials, _layers
    from twin.ctsimu.sources import spekpy_spectrum, write_spectrum_file

    src = scenario["source"]
    kv = float(src["voltage"]["value"])
    mats = read_materials(scenario)
    window = _layers(src.get("window"), mats, "source.window")
    emis = float(((src.get("target") or {}).get("angle") or {}).get("emission", {}).get("value") or 12.0)
    sp = spekpy_spectrum(kv, 1.0, "W", transmission=False, emission_angle_deg=emis, target_thickness_um=None)
    write_spectrum_file(path, sp.filtered(window), 1.0)


def prepare_test_folder(scenario_file: str | Path, folder: str | Path, *,
                        edge_tilts_deg: tuple[float, float] | None = None) -> Path:
    """Copy a shipped 2D-test scenario into ``folder`` and write the files it references.

    ``edge_tilts_deg`` (diagnostics only): tilts ``(t1, t2)`` of the two edges of the
    ``Halbraumkante`` stand-in (:func:`edge_block_triangles`) instead of the nominal 3 deg;
    in the WE images ``t1`` is the near-horizontal edge, ``t2`` the near-vertical one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenario_file = Path(scenario_file)
    dst = folder / scenario_file.name
    with atomic_path(dst) as tmp:
        shutil.copyfile(scenario_file, tmp)
    data = json.loads(dst.read_text(encoding="utf-8"))
    sfile = ((data.get("source") or {}).get("spectrum") or {}).get("file") or {}
    if sfile.get("value") and not (folder / sfile["value"]).exists():
        _spectrum_for(data, folder / sfile["value"])
    for s in data.get("samples") or []:
        name = s["file"]["value"]
        if (folder / name).exists():
            continue
        if "Halbraumkante" in name:
            sod = float(data["geometry"]["stage"]["center"]["x"]["value"]) - \
                float(data["geometry"]["source"]["center"]["x"]["value"])
            centre = s["position"]["center"]
            cvw = (float(centre["v"]["value"]), float(centre["w"]["value"]))
            t1, t2 = edge_tilts_deg or (3.0, 3.0)
            _write_stl(folder / name, edge_block_triangles(cvw, tilt_deg=t1, tilt2_deg=t2,
                                                           source_distance_mm=sod))
        elif "Folie" in name:
            _write_stl(folder / name, hole_foil_triangles(data))
        elif "DuplexWire" in name:
            _write_stl(folder / name, duplex_wire_triangles(center_yz_mm=_duplex_centre_mm(data)))
        else:
            raise FileNotFoundError(f"no stand-in for {name}")
    return dst
