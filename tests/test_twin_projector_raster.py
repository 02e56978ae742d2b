"""The mesh rasteriser against the BVH ray tracer, analytic chords and itself (issue 2).

``twin.projector.mesh_path_lengths`` projects triangles onto the detector and tests pixel
centres against them (float64, the ray tracer's watertight edge test ``_tri_hit``, integer
accumulation); the BVH tracer follows each ray through the scene. They are two algorithms for
the same rays, so they must give the same lengths (to the tracer's float32 rounding; a ray
exactly on a shared edge may go to a different triangle in each), and neither may lose or
double a ray where triangles meet, even for rays exactly on projected edges.
"""

from __future__ import annotations

import numpy as np
import pytest

from twin.geometry import ScanGeometry
from twin.materials import get_material
from twin.meshes import MeshPart, primitive_triangles
from twin.projector import can_rasterise, mesh_path_lengths
from twin.scene import Scene

FE, AL = get_material("Fe"), get_material("Al")


def nested_scene(method: str) -> Scene:
    """An SS-like tube around an off-centre rod: nesting, slivers, caps seen at an angle."""
    tube = primitive_triangles("tube", {"radius_mm": 1.2, "inner_radius_mm": 0.9, "height_mm": 2.0},
                               sections=96)
    rod = primitive_triangles("cylinder", {"radius_mm": 0.6, "height_mm": 1.0,
                                           "center_mm": [0.07, 0.02, 0.25]}, sections=64)
    ball = primitive_triangles("sphere", {"radius_mm": 0.25, "center_mm": [0.1, 0.0, 0.3]},
                               subdivisions=2)
    return Scene(parts=(MeshPart("tube", FE, tube), MeshPart("rod", AL, rod),
                        MeshPart("ball", FE, ball)), mesh_method=method)


@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_raster_equals_ray_tracing(beam):
    g = ScanGeometry(30.0, 20.0, objective="flat-panel", pixel_um=25.0 if beam == "cone" else 15.0,
                     cols=157, rows=131, n_views=3, arc_deg=97.0, start_deg=11.0, beam=beam,
                     axis_tilt_deg=2.0, axis_offset_mm=0.03, detector_offset_px=(3.3, -2.7))
    vec = g.vectors()
    par = beam == "parallel"
    raster, _ = nested_scene("raster").path_lengths(vec, g.rows, g.cols, parallel=par, arch="cpu")
    traced, _ = nested_scene("bvh").path_lengths(vec, g.rows, g.cols, parallel=par, arch="cpu")
    # the scene is there: both materials, rays through tube and rod
    assert raster[:, 0].max() > 1.0 and raster[:, 1].max() > 0.5
    assert np.abs(raster - traced).max() <= 2e-5
    assert raster.min() >= 0.0


def test_raster_supersampled_and_subrays_equal_ray_tracing():
    g = ScanGeometry(30.0, 20.0, objective="flat-panel", pixel_um=60.0, cols=61, rows=47, n_views=2,
                     beam="cone")
    vec = g.vectors()
    for kw in ({"supersample": 3}, {"supersample": 3, "subray": 5}):
        a, _ = nested_scene("raster").path_lengths(vec, g.rows, g.cols, arch="cpu", **kw)
        b, _ = nested_scene("bvh").path_lengths(vec, g.rows, g.cols, arch="cpu", **kw)
        assert np.abs(a - b).max() <= 2e-5, kw


def test_rays_on_projected_edges_are_counted_once():
    """Parallel beam along +y onto a box whose faces' edges lie exactly on pixel centres (and
    the side faces edge-on): every ray sees 0 or the full 0.6 mm, never a part or double."""
    n, pitch = 41, 0.05
    box = primitive_triangles("box", {"size_mm": [1.0, 0.6, 1.0]})  # x, z edges at +-0.5 mm
    g = ScanGeometry(100.0, 0.0, objective="flat-panel", pixel_um=pitch * 1000, cols=n, rows=n,
                     n_views=1, beam="parallel")
    for method in ("raster", "bvh"):
        scene = Scene(parts=(MeshPart("box", FE, box),), mesh_method=method)
        got = scene.path_lengths(g.vectors(), n, n, parallel=True, arch="cpu")[0][0, 0]
        full = np.isclose(got, 0.6, atol=1e-5)
        assert np.all(full | (got == 0.0)), method
        # centres at -1.0 ... 1.0 mm: 19 strictly inside per axis, the 2 on the edges
        # (x, z = +-0.5) go to exactly one side each under the tie rule
        assert full.sum(axis=1).max() == 20 and full.sum(axis=0).max() == 20, method
        assert full.sum() == 400, method


def test_raster_is_deterministic_and_chunk_independent(monkeypatch):
    import twin.projector

    g = ScanGeometry(30.0, 20.0, objective="flat-panel", pixel_um=30.0, cols=96, rows=80, n_views=4,
                     beam="cone")
    vec = g.vectors()
    scene = nested_scene("raster")
    whole, _ = scene.path_lengths(vec, g.rows, g.cols, arch="cpu")
    again, _ = scene.path_lengths(vec, g.rows, g.cols, arch="cpu")
    one_by_one = np.concatenate([scene.path_lengths(vec, g.rows, g.cols, view_start=i, n_views=1,
                                                    arch="cpu")[0] for i in range(4)])
    # accumulators limited to 7 detector rows: row blocks of 7 and one view at a time
    monkeypatch.setattr(twin.projector, "RASTER_BYTES", 7 * 3 * 96 * 8)
    blocks, _ = scene.path_lengths(vec, g.rows, g.cols, arch="cpu")
    assert whole.tobytes() == again.tobytes() == one_by_one.tobytes() == blocks.tobytes()


def test_source_inside_a_part_falls_back_to_ray_tracing():
    """A cone-beam source inside a mesh cannot be rasterised (vertices behind the source):
    the tracer then counts the length from the source to the exit."""
    slab = primitive_triangles("box", {"size_mm": [40.0, 60.0, 40.0], "center_mm": [0.0, -20.0, 0.0]})
    g = ScanGeometry(30.0, 20.0, objective="flat-panel", pixel_um=500.0, cols=9, rows=7, n_views=1,
                     beam="cone")
    vec = g.vectors()
    assert not can_rasterise(vec, slab)
    with pytest.raises(ValueError):
        mesh_path_lengths(vec, slab, np.zeros(len(slab), np.int32), 1, 7, 9, method="raster", arch="cpu")
    got = mesh_path_lengths(vec, slab, np.zeros(len(slab), np.int32), 1, 7, 9, arch="cpu")[0, 0]
    # the ray from the source at y = -30 leaves the slab at y = +10: 40 mm / cos(angle)
    a, d, u, w = vec[0, 0:3], vec[0, 3:6], vec[0, 6:9], vec[0, 9:12]
    c = np.arange(9) - 4.0
    r = np.arange(7) - 3.0
    direc = d + c[None, :, None] * u + r[:, None, None] * w - a
    ref = 40.0 * np.linalg.norm(direc, axis=-1) / direc[..., 1]
    np.testing.assert_allclose(got, ref, rtol=1e-5)


CUDA_SCRIPT = """
import sys, numpy as np
from twin.runtime import init_taichi
init_taichi(sys.argv[1])
from twin.geometry import ScanGeometry
from tests.test_twin_projector_raster import nested_scene
g = ScanGeometry(30.0, 20.0, objective="flat-panel", pixel_um=25.0, cols=157, rows=131, n_views=3,
                 arc_deg=97.0, beam="cone")
L, _ = nested_scene("raster").path_lengths(g.vectors(), g.rows, g.cols, supersample=2, subray=1)
np.save(sys.argv[2], L)
"""


def test_raster_cpu_and_cuda_agree(tmp_path):
    """Integer accumulation: the GPU's hit sums equal the CPU's (only the float64 rounding of
    the projection may differ). Runs where an NVIDIA GPU is present."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_twin_cuda import _has_cuda

    if not _has_cuda():
        pytest.skip("no gpu: CUDA is not available on this machine")
    script = tmp_path / "run.py"
    script.write_text(CUDA_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    for arch in ("cpu", "cuda"):
        subprocess.run([sys.executable, str(script), arch, str(tmp_path / f"{arch}.npy")], check=True,
                       cwd=root, env={**__import__("os").environ, "PYTHONPATH": root})
    cpu, gpu = np.load(tmp_path / "cpu.npy"), np.load(tmp_path / "cuda.npy")
    assert cpu.max() > 1.0
    assert np.abs(cpu - gpu).max() <= 1e-5


# ---------------------------------------------------------------- chunking, sub-rays, method, clamping


def test_raster_chunk_plan_keeps_taichi_loops_below_2_31():
    """Taichi sizes a ti.ndrange in 32-bit ints: views x triangles x slices >= 2^31 would run
    no iteration (all lengths 0), so the plan caps the views per call; no mesh needed."""
    from twin.errors import XrmInputError
    from twin.projector import MAX_NDRANGE, raster_chunk_plan

    assert MAX_NDRANGE == 2 ** 31 - 1
    for n_faces, target in ((6144, 4096), (6144, 262144), (3 * 10 ** 6, 262144), (4 * 10 ** 7, 4096),
                            (10 ** 9, 4096), (MAX_NDRANGE, 4096)):
        nslice, views, block = raster_chunk_plan(3201, n_faces, 2, 1024, 1024, target_items=target,
                                                 budget_bytes=2 ** 40)
        assert 1 <= nslice <= 64 and 1 <= block <= 1024 and views >= 1
        assert views * n_faces * nslice <= MAX_NDRANGE, (n_faces, nslice, views)
    # 40 M triangles: at most 53 views per call (the memory budget alone would allow all)
    assert raster_chunk_plan(3201, 4 * 10 ** 7, 2, 1024, 1024, target_items=4096,
                             budget_bytes=2 ** 40)[1] == MAX_NDRANGE // (4 * 10 ** 7)
    # small meshes: the memory budget decides, as before
    nslice, views, block = raster_chunk_plan(100, 6144, 3, 256, 256, target_items=4096,
                                             budget_bytes=128 * 2 ** 20)
    assert (nslice, block, views) == (1, 256, 128 * 2 ** 20 // (3 * 256 * 256 * 8))
    with pytest.raises(XrmInputError, match="triangles"):
        raster_chunk_plan(1, 2 ** 31, 1, 8, 8, target_items=4096)


def test_sub_offsets_match_the_kernels():
    """The host's sub-ray offsets (rasteriser, tests) are the kernels' ``_sub_offset`` (to an ulp:
    Taichi compiles with fast math, which may turn the division into a reciprocal product)."""
    import taichi as ti

    from twin.projector import _sub_offset, sub_offsets
    from twin.runtime import init_taichi

    init_taichi("cpu")
    field = ti.field(ti.f64, shape=(64, 2))

    for ss in (1, 2, 3, 5, 8):
        # (no annotated kernel arguments: this module's annotations are strings)
        @ti.kernel
        def offsets():
            for i in range(ss * ss):
                field[i, 0], field[i, 1] = _sub_offset(i, ss)

        offsets()
        got = field.to_numpy()[:ss * ss]
        sr, sc = sub_offsets(ss)
        np.testing.assert_allclose(got, np.stack([sr, sc], axis=1), rtol=0, atol=4e-16)
    sr, sc = sub_offsets(3)
    np.testing.assert_allclose(sr, np.repeat([-1 / 3, 0.0, 1 / 3], 3), rtol=0, atol=1e-15)  # row-major
    np.testing.assert_allclose(sc, np.tile([-1 / 3, 0.0, 1 / 3], 3), rtol=0, atol=1e-15)


def test_scene_decides_the_method_once_and_builds_the_bvh_only_when_used(monkeypatch):
    import twin.projector

    calls = []
    real = twin.projector._between_source_and_detector
    monkeypatch.setattr(twin.projector, "_between_source_and_detector",
                        lambda *a: calls.append(1) or real(*a))
    g = ScanGeometry(30.0, 20.0, objective="flat-panel", pixel_um=60.0, cols=31, rows=27, n_views=2,
                     beam="cone")
    scene = nested_scene("auto")
    scene.path_lengths(g.vectors(), g.rows, g.cols, arch="cpu")
    assert len(calls) == 1 and "bvh" not in scene._cache  # rasterised: no BVH built
    slab = primitive_triangles("box", {"size_mm": [40.0, 60.0, 40.0], "center_mm": [0.0, -20.0, 0.0]})
    inside = Scene(parts=(MeshPart("slab", FE, slab),))
    inside.path_lengths(g.vectors(), g.rows, g.cols, arch="cpu")
    assert len(calls) == 2 and "bvh" in inside._cache  # source inside: the BVH tracer ran


def test_scene_method_is_checked_and_replace_gives_a_cache_of_its_own():
    import dataclasses

    from twin.errors import XrmInputError

    with pytest.raises(XrmInputError, match="'auto', 'raster', 'bvh'"):
        nested_scene("rasterise")
    a = nested_scene("auto").prepare()
    b = dataclasses.replace(a, mesh_method="bvh")
    assert b.mesh_method == "bvh" and b._cache is not a._cache and "mesh" not in b._cache
    b._bvh()
    assert "bvh" not in a._cache
    assert a == dataclasses.replace(a) and "_cache" not in repr(a)


def lone_triangle_scene():
    """A closed box (part 0) and, behind it, a single triangle (part 1, an open surface): each
    ray through the triangle has one lone hit, as a ray exactly on an edge of a face in a plane
    through the source could get in a closed mesh. Box 1 x 0.6 x 1 mm at the origin; the
    triangle (0.4 mm legs, box diagonal 0.57 mm) at y = 2 mm, facing the source."""
    box = primitive_triangles("box", {"size_mm": [1.0, 0.6, 1.0]})
    tri = np.array([[[-0.2, 2.0, -0.2], [0.2, 2.0, -0.2], [-0.2, 2.0, 0.2]]])
    if np.cross(tri[0, 1] - tri[0, 0], tri[0, 2] - tri[0, 0])[1] > 0:  # normal towards the source
        tri = tri[:, ::-1]
    return np.concatenate([box, tri]), np.r_[np.zeros(len(box), np.int32), 1]


@pytest.mark.parametrize("method", ["raster", "bvh"])
@pytest.mark.parametrize("facing", ["source", "detector"])
def test_lone_hits_are_set_to_zero_and_counted(method, facing, monkeypatch, caplog):
    """A part's inside length below -eps (a lone entry) or above its box diagonal (a lone exit,
    ~ the distance from the ray origin) is not a chord: 0, with a warning giving the count."""
    import logging

    import twin.projector

    tris, part = lone_triangle_scene()
    if facing == "detector":
        tris[-1] = tris[-1][::-1]
    g = ScanGeometry(30.0, 20.0, objective="flat-panel", pixel_um=40.0, cols=41, rows=41, n_views=1,
                     beam="cone")
    vec = g.vectors()
    kw = dict(method=method, arch="cpu")
    with caplog.at_level(logging.WARNING, logger="xrm_twin"):
        got = mesh_path_lengths(vec, tris, part, 2, 41, 41, **kw)[0]
    # without the limits: the lone hits as traced (+-t from the ray origin)
    monkeypatch.setattr(twin.projector, "_part_limits",
                        lambda diag, eps: np.array([[-np.inf, np.inf]] * len(diag)))
    raw = mesh_path_lengths(vec, tris, part, 2, 41, 41, **kw)[0]
    hit = raw[1] != 0
    assert hit.sum() > 20
    if facing == "source":
        assert raw[1][hit].max() < -0.5
    else:
        assert raw[1][hit].min() > 0.6
    # the closed box is untouched, the open triangle contributes nothing
    assert got[0].tobytes() == raw[0].tobytes() and got[0].max() > 0.59
    assert np.all(got[1] == 0)
    msgs = [r.getMessage() for r in caplog.records if "inside length" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].startswith(f"mesh path lengths: {int(hit.sum())} of {41 * 41} rays")


def test_closed_scenes_need_no_clamping(caplog):
    """Rounding of closed meshes (tiny negative lengths at grazing rays) is not a lone hit."""
    import logging

    g = ScanGeometry(30.0, 20.0, objective="flat-panel", pixel_um=25.0, cols=157, rows=131, n_views=3,
                     arc_deg=97.0, start_deg=11.0, beam="cone", axis_tilt_deg=2.0)
    with caplog.at_level(logging.WARNING, logger="xrm_twin"):
        for method in ("raster", "bvh"):
            nested_scene(method).path_lengths(g.vectors(), g.rows, g.cols, supersample=2, subray=3,
                                              arch="cpu")
    assert not [r for r in caplog.records if "inside length" in r.getMessage()]


def test_part_diagonals():
    from twin.projector import part_diagonals

    tris, part = lone_triangle_scene()
    want = [np.sqrt(1.0 + 0.36 + 1.0), np.sqrt(0.32)]
    np.testing.assert_allclose(part_diagonals(tris, part, 3), want + [0.0], rtol=1e-12)
    perm = np.random.default_rng(1).permutation(len(part))  # parts need not be contiguous
    np.testing.assert_allclose(part_diagonals(tris[perm], part[perm], 2), want, rtol=1e-12)
