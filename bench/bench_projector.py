"""Projector benchmark (issue 2, must-show 8): label-volume ray samples and mesh projections vs gVXR.

Run from the repository root::

    python -m bench.bench_projector [--quick] [--arch cpu|cuda|auto] [--json OUT]

(a) **Label volume.** Ray samples (voxel steps of the Amanatides-Woo traversal, as counted by
    :func:`twin.projector.grid_path_lengths`) per second through an N^3 label volume of three
    materials projected in cone beam onto a 256^2 detector (N = 128 and 256), after a warm-up
    call that compiles the Taichi kernel.
(b) **Mesh projections.** The two-material scene of ``tests/test_twin_gvxr.py`` (an SS304
    tube around an aluminium rod, 512 sections per circle, 6144 triangles), cone beam, the
    same detector (256^2), spectrum and number of views on both sides, one ray per pixel (no
    supersampling). Two beams: the 100 kV / LE3 tube spectrum (the plan's 1 keV bins, 93 of
    them) and a monochromatic 60 keV beam (gVXR's cost grows with the number of bins, ours
    hardly). xrm-twin: the whole scan through :func:`twin.acquisition.iter_projections`
    (ideal detector: path lengths, Beer-Lambert spectral sums, solid angle), plus the path
    lengths alone (the default mesh rasteriser, and the BVH ray tracer for comparison) and
    the spectral sums alone (all four weight rows; the ideal detector's scan needs one). gVXR: ``rotateScene`` + ``computeXRayImage`` into a preallocated numpy
    array (its fastest path), one view at a time. Set-up (plan resolution with nesting checks
    / OpenGL context, STL export and load, spectrum) and the first (compiling /
    shader-building) image are timed apart from the per-projection time. The timed runs of
    the two tools are interleaved and the best of several kept, since the CPU may be shared.

Prints a markdown table (with the machine, date and versions) and writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(arch: str) -> dict:
    import taichi as ti

    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "taichi": ".".join(map(str, ti.__version__)),
        "arch": arch,
        "command": "python -m " + " ".join(["bench.bench_projector"] + sys.argv[1:]),
        "load_average_before": list(os.getloadavg()),
    }
    return info


# ---------------------------------------------------------------------------- (a) voxels


def label_volume(n: int) -> np.ndarray:
    """An n^3 uint8 volume: a cylinder (label 1) holding a sphere (label 2) and a slab (label 3)."""
    c = ((np.arange(n) + 0.5) / n * 2.0 - 1.0).astype(np.float32)
    z, y, x = c[:, None, None], c[None, :, None], c[None, None, :]
    lab = np.zeros((n, n, n), np.uint8)
    full = lab.shape
    cyl = x ** 2 + y ** 2 < 0.9 ** 2
    lab[np.broadcast_to(cyl, full)] = 1
    lab[np.broadcast_to((x - 0.2) ** 2 + y ** 2 + (z + 0.1) ** 2 < 0.4 ** 2, full)] = 2
    lab[np.broadcast_to((np.abs(y + 0.3) < 0.1) & cyl, full)] = 3
    return lab


def voxel_scene(n: int, n_views: int, det: int):
    """The label-volume job: (per-view vectors, labels, material LUT, lower corner mm, voxel mm)
    of an n^3 scene 2.56 mm across, cone beam onto det^2 pixels."""
    from twin.geometry import ScanGeometry

    side_mm = 2.56
    a, b = 60.0, 40.0
    # detector fits the volume's magnified width (the near face is magnified most)
    mag = (a + b) / (a - side_mm / 2 * np.sqrt(2))
    pitch_um = side_mm * np.sqrt(2) * mag / det * 1000.0
    geo = ScanGeometry(source_object_mm=a, object_detector_mm=b, objective="flat-panel",
                       pixel_um=pitch_um, cols=det, rows=det, n_views=n_views, beam="cone")
    return (geo.vectors(), label_volume(n), np.array([-1, 0, 1, 2], np.int32),
            (-side_mm / 2,) * 3, side_mm / n)


def bench_voxels(n: int, n_views: int, *, det: int = 256, arch: str = "cpu", repeats: int = 3) -> dict:
    from twin.projector import grid_path_lengths

    vec, lab, lut, lower, sp = voxel_scene(n, n_views, det)
    t0 = time.perf_counter()
    grid_path_lengths(vec[:1], lab, lut, 3, lower, (sp,) * 3, det, det, arch=arch)
    warm = time.perf_counter() - t0
    dt, (_, samples) = best_of(repeats, lambda: grid_path_lengths(
        vec, lab, lut, 3, lower, (sp,) * 3, det, det, arch=arch))
    return {"volume": f"{n}^3", "detector": f"{det}^2", "views": n_views, "warmup_s": warm,
            "time_s": dt, "ray_samples": samples, "ray_samples_per_s": samples / dt,
            "rays_per_s": n_views * det * det / dt, "s_per_view": dt / n_views}


# ---------------------------------------------------------------------------- (b) meshes

A_MM, B_MM = 60.0, 40.0


def mesh_parts(sections: int = 512) -> list[dict]:
    return [
        {"shape": "tube", "name": "tube", "material": "SS304", "radius_mm": 1.55,
         "inner_radius_mm": 1.15, "height_mm": 6.0, "sections": sections},
        {"shape": "cylinder", "name": "rod", "material": "Al", "radius_mm": 0.9, "height_mm": 4.0,
         "center_mm": [0.05, 0.0, 0.3], "sections": sections},
    ]


#: Beams of the mesh comparison: the 100 kV / LE3 tube spectrum in 1 keV bins (the plan keeps
#: the bins that carry weight) and a monochromatic 60 keV beam (one bin).
MESH_BEAMS = {
    "100 kV LE3": {"kvp": 100, "power_w": 10, "filter": "LE3"},
    "60 keV mono": {"kvp": 100, "power_w": 10, "filter": "LE3", "monochromatic_kev": 60.0},
}


def mesh_spec(det: int, n_views: int, sections: int, source: dict):
    from tests.twin_helpers import parts_scenario

    # field of view at the object 4 mm: the tube (3.1 mm) with some air around it
    pitch_um = 4.0 / det * (A_MM + B_MM) / A_MM * 1000.0
    return parts_scenario(mesh_parts(sections), pixels=(det, det), pixel_um=pitch_um, beam="cone",
                          projections=n_views, source_object_mm=A_MM, object_detector_mm=B_MM,
                          source=dict(source))


def best_of(repeats: int, fn):
    """(shortest wall time, last result) of ``repeats`` calls of ``fn()``."""
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


class TwinMesh:
    """xrm-twin side of the mesh comparison: set-up now, :meth:`project` timed later."""

    def __init__(self, det: int, n_views: int, sections: int, arch: str, source: dict):
        from twin.plan import resolve
        from twin.spectral import spectral_sums

        self.arch, self.n_views = arch, n_views
        t0 = time.perf_counter()
        self.plan = resolve(mesh_spec(det, n_views, sections, source))
        self.setup_s = time.perf_counter() - t0
        g = self.plan.geometry
        self.vec = g.vectors()
        # first call: compiles (or loads from Taichi's offline cache) both kernels
        t0 = time.perf_counter()
        lengths, _ = self.plan.scene.path_lengths(self.vec[:1], g.rows, g.cols, arch=arch)
        spectral_sums(lengths, self.plan.mu_per_mm, self.plan.weights, arch=arch)
        self.first_image_s = time.perf_counter() - t0
        self.faces = sum(len(p.triangles) for p in self.plan.scene.parts)
        self._scenes: dict = {}
        self.energy_bins = int(self.plan.energy_kev.size)

    def project(self) -> np.ndarray:
        """The scan as a user runs it (ideal detector), (views, rows, cols)."""
        from twin.acquisition import iter_projections

        return np.concatenate([c.images for c in iter_projections(self.plan, arch=self.arch)])

    def paths(self, method: str = "auto"):
        """Per-material path lengths of all views; ``method`` as in
        :func:`twin.projector.mesh_path_lengths` (``"auto"``: the rasteriser here)."""
        import dataclasses

        g = self.plan.geometry
        scene = self.plan.scene
        if method != "auto":
            scene = self._scenes.setdefault(method, dataclasses.replace(scene, mesh_method=method))
        return scene.path_lengths(self.vec, g.rows, g.cols, arch=self.arch)[0]

    def spectral(self, lengths):
        from twin.spectral import spectral_sums

        return spectral_sums(lengths, self.plan.mu_per_mm, self.plan.weights, arch=self.arch)

    def transmission0(self, images: np.ndarray) -> np.ndarray:
        from twin.acquisition import flats_and_darks

        flats, darks = flats_and_darks(self.plan)
        return (images[0] - darks[0]) / (flats[0] - darks[0])


def gvxr_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("gvxr")
    except Exception:
        return None


_GVXR_CONTEXT = False


class GvxrMesh:
    """gVXR side: the same plan (meshes, materials, spectrum, geometry) in gVXR."""

    def __init__(self, plan, n_views: int):
        global _GVXR_CONTEXT
        from gvxrPython3 import gvxr

        from tests.test_twin_gvxr import setup_gvxr

        self.gvxr, self.n_views = gvxr, n_views
        g = plan.geometry
        t0 = time.perf_counter()
        if not _GVXR_CONTEXT:  # one context per process: a second one renders nothing
            gvxr.createOpenGLContext()
            _GVXR_CONTEXT = True
        gvxr.resetSceneTransformation()
        setup_gvxr(gvxr, plan, Path(tempfile.mkdtemp(prefix="bench_gvxr_")))
        self.setup_s = time.perf_counter() - t0
        img = np.zeros((g.rows, g.cols), np.float32)
        t0 = time.perf_counter()
        gvxr.computeXRayImage(img)
        self.first_image_s = time.perf_counter() - t0
        self.trans0 = img / np.asarray(gvxr.getWhiteImage(), np.float64)
        self.images = np.empty((n_views, g.rows, g.cols), np.float32)
        self.version = gvxr_version()
        self.renderer = f"{gvxr.getOpenGlRenderer()}; OpenGL {gvxr.getOpenGlVersion()}"

    def project(self) -> np.ndarray:
        """One full turn, view by view, into preallocated arrays (gVXR's fastest path)."""
        step = 360.0 / self.n_views
        for i in range(self.n_views):
            self.gvxr.rotateScene(step, 0.0, 0.0, 1.0)
            self.gvxr.computeXRayImage(self.images[i])
        if not np.all(np.isfinite(self.images)) or self.images.max() <= 0:
            raise RuntimeError("gVXR returned empty images")
        return self.images

    def close(self) -> None:
        self.gvxr.removePolygonMeshesFromSceneGraph()


def bench_mesh(det: int, n_views: int, sections: int, arch: str, source: dict, repeats: int,
               beam: str) -> dict:
    """Both tools on the same scene; timed runs interleaved (twin, gVXR, twin, ...), best kept."""
    ours = TwinMesh(det, n_views, sections, arch, source)
    try:
        theirs = GvxrMesh(ours.plan, n_views)
    except ImportError as exc:
        print(f"gVXR not available ({exc}); skipping the peer", file=sys.stderr)
        theirs = None
    t_ours = t_theirs = np.inf
    images = None
    for _ in range(repeats):
        dt, images = best_of(1, ours.project)
        t_ours = min(t_ours, dt)
        if theirs is not None:
            t_theirs = min(t_theirs, best_of(1, theirs.project)[0])
    t_paths, lengths = best_of(repeats, ours.paths)
    ours.paths("bvh")  # first call builds the BVH
    t_bvh, _ = best_of(repeats, lambda: ours.paths("bvh"))
    t_spec, _ = best_of(repeats, lambda: ours.spectral(lengths))
    row = {"beam": beam, "detector": f"{det}^2", "views": n_views, "faces": ours.faces,
           "energy_bins": ours.energy_bins,
           "twin": {"setup_s": ours.setup_s, "first_image_s": ours.first_image_s, "time_s": t_ours,
                    "s_per_view": t_ours / n_views, "views_per_s": n_views / t_ours,
                    "paths_s_per_view": t_paths / n_views, "paths_bvh_s_per_view": t_bvh / n_views,
                    "spectral_s_per_view": t_spec / n_views}}
    if theirs is not None:
        row["gvxr"] = {"setup_s": theirs.setup_s, "first_image_s": theirs.first_image_s,
                       "time_s": t_theirs, "s_per_view": t_theirs / n_views,
                       "views_per_s": n_views / t_theirs, "version": theirs.version,
                       "renderer": theirs.renderer}
        row["speedup_twin_over_gvxr"] = t_theirs / t_ours
        t, g = ours.transmission0(images), theirs.trans0
        m = t > 1e-3
        rel = np.abs(g[m] / t[m] - 1.0)
        row["view0_rel_diff"] = {"max": float(rel.max()), "mean": float(rel.mean()),
                                 "p99": float(np.percentile(rel, 99))}
        theirs.close()
    return row


# ---------------------------------------------------------------------------- report


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def run(quick: bool, arch: str, volumes=(128, 256), voxel_detector: int = 256,
        mesh: bool = True) -> dict:
    from twin.runtime import init_taichi

    arch_used = init_taichi(arch)
    res = {"machine": machine_info(arch_used), "voxels": [], "mesh": []}
    repeats = 2 if quick else 5
    res["machine"]["repeats"] = repeats
    for n in volumes:
        nv = max(1, (4 if quick else 16) * 128 // max(n, 128))  # 16 views at 128^3, 8 at 256^3
        res["voxels"].append(bench_voxels(n, nv, det=voxel_detector, arch=arch_used,
                                          repeats=repeats))
    det, nv, sections = (256, 8, 512) if quick else (256, 32, 512)
    for beam, source in (MESH_BEAMS.items() if mesh else ()):
        row = bench_mesh(det, nv, sections, arch_used, source, repeats, beam)
        if "gvxr" in row:
            res["machine"]["gvxr"] = row["gvxr"]["version"]
            res["machine"]["opengl"] = row["gvxr"]["renderer"]
        res["mesh"].append(row)
    res["machine"]["load_average_after"] = list(os.getloadavg())
    return res


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cpu_cores']} cores, {m['platform']}; Python {m['python']}, "
             f"Taichi {m['taichi']} (arch {m['arch']})"
             + (f"; gVXR {m['gvxr']} on {m['opengl']}" if "gvxr" in m
                else "; gVXR not run" if not res["mesh"] else "; gVXR absent"),
             f"Date: {m['date_utc']}. Command: `{m['command']}`. Times: best of {m['repeats']} runs "
             f"(tools interleaved). Load average (1 min) before / after: "
             f"{m['load_average_before'][0]:.2f} / {m['load_average_after'][0]:.2f}.",
             "",
             "Label volume (cone beam, 3 materials, 1 ray per pixel):", "",
             "| volume | detector | views | warm-up s | s/view | Mrays/s | G ray-samples/s |",
             "|---|---|---|---|---|---|---|"]
    for v in res["voxels"]:
        lines.append(f"| {v['volume']} | {v['detector']} | {v['views']} | {fmt(v['warmup_s'])} | "
                     f"{fmt(v['s_per_view'])} | {fmt(v['rays_per_s'] / 1e6)} | "
                     f"{fmt(v['ray_samples_per_s'] / 1e9)} |")
    if not res["mesh"]:
        return "\n".join(lines)
    lines += ["", "Mesh projection, SS304 tube + Al rod (cone beam, same spectrum, 1 ray per pixel):", "",
              "| beam | tool | detector | views | faces | energy bins | set-up s | first image s "
              "| s/view | views/s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in res["mesh"]:
        t = r["twin"]
        b = r["beam"]
        lines.append(f"| {b} | xrm-twin (iter_projections, ideal) | {r['detector']} | {r['views']} | "
                     f"{r['faces']} | {r['energy_bins']} | {fmt(t['setup_s'])} | "
                     f"{fmt(t['first_image_s'])} | {fmt(t['s_per_view'])} | {fmt(t['views_per_s'])} |")
        lines.append(f"| {b} | xrm-twin: mesh path lengths alone (rasteriser) | | | | | | | "
                     f"{fmt(t['paths_s_per_view'])} | {fmt(1 / t['paths_s_per_view'])} |")
        if "paths_bvh_s_per_view" in t:
            lines.append(f"| {b} | xrm-twin: mesh path lengths, BVH ray tracer | | | | | | | "
                         f"{fmt(t['paths_bvh_s_per_view'])} | {fmt(1 / t['paths_bvh_s_per_view'])} |")
        lines.append(f"| {b} | xrm-twin: spectral sums alone | | | | | | | "
                     f"{fmt(t['spectral_s_per_view'])} | {fmt(1 / t['spectral_s_per_view'])} |")
        if "gvxr" in r:
            g = r["gvxr"]
            lines.append(f"| {b} | gVXR {g['version']} (computeXRayImage) | {r['detector']} | "
                         f"{r['views']} | {r['faces']} | {r['energy_bins']} | {fmt(g['setup_s'])} | "
                         f"{fmt(g['first_image_s'])} | {fmt(g['s_per_view'])} | {fmt(g['views_per_s'])} |")
            d = r["view0_rel_diff"]
            notes.append(f"- {b}: speed-up xrm-twin / gVXR per projection "
                         f"**{r['speedup_twin_over_gvxr']:.2f}x**; view 0 agreement (transmission "
                         f"> 1e-3): max {d['max']:.1e}, 99th percentile {d['p99']:.1e}, "
                         f"mean {d['mean']:.1e}.")
    return "\n".join(lines + [""] + notes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer views (a smoke run)")
    ap.add_argument("--arch", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--volumes", default="128,256",
                    help="label-volume sizes N (N^3 voxels), comma-separated (default 128,256)")
    ap.add_argument("--voxel-detector", type=int, default=256,
                    help="detector size (pixels per side) of the label-volume runs (default 256)")
    ap.add_argument("--no-mesh", action="store_true", help="skip the mesh / gVXR comparison")
    args = ap.parse_args(argv)
    volumes = tuple(int(v) for v in args.volumes.split(",") if v.strip())
    res = run(args.quick, args.arch, volumes=volumes, voxel_detector=args.voxel_detector,
              mesh=not args.no_mesh)
    print(markdown(res))
    if args.json:
        from twin.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
