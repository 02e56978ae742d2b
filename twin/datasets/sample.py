"""One dataset sample: a pure task of (spec, index) writing one HDF5 shard.

``run_sample(spec, index, out_dir)`` draws the sample (:func:`twin.datasets.spec.draw_sample`),
simulates the scan with :func:`twin.simulate.simulate_to` (the code ``xrm-twin simulate`` runs),
takes the ground truth (``truth.h5`` for battery phantoms; for ``kind = "parts"`` the parts
rasterised on the label grid by the code of their ``truth.h5``, see :func:`parts_labels`),
optionally reconstructs onto the label grid (so volume and labels align voxel for voxel) and
cuts random patches. The shard is written to a temporary name and renamed when complete; its
bytes depend only on (spec, index) (no timestamps: ``track_times=False``, canonical JSON).
A sidecar ``sample_NNNNNN.json`` holds the manifest row (parameters, SHA-256 of the shard).

Shard layout (``shards/sample_NNNNNN.h5``)::

    attrs: format, index, split, base, spec_hash, params (JSON), scenario (JSON, the complete
           scenario that reproduces the sample), software
    /projections/data [V, R, C], /projections/flats, /projections/darks,
    /projections/angles_deg; attrs geometry (JSON)                       (store.projections)
    /volume [Z, Y, X] float32, 1/mm; attrs voxel_size_um, origin_mm     (store.recon)
    /labels [Z, Y, X] uint8/uint16; attrs voxel_size_um, origin_mm      (store.labels)
    /instances [Z, Y, X] int32 (parts: part index + 1; phantoms: their instances, if any)
    /materials table: label, name, material, density_g_cm3; attr json   (store.labels)
    /defects table: id, type, label, center_mm, size_um, volume_mm3; attr json (store.defects)
    /patches/volume [P, pz, py, px], /patches/labels, /patches/corner_zyx (store.patches)

With ``[store] format = "zarr"`` each shard is a Zarr v3 directory ``shards/sample_NNNNNN.zarr``
with the same arrays and attributes (``materials`` and ``defects`` as groups holding only
their ``json`` attribute; arrays chunked by 16 planes, zstd at level ``store.compression``:
gzip headers carry a time stamp, which would break byte-identical shards). It is
written to a hidden ``.part`` folder and renamed when complete; its checksum is the SHA-256
of every file's relative path and bytes in sorted order (:func:`tree_sha256`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from twin import __version__
from twin.atomic import atomic_path
from twin.errors import XrmInputError
from twin.scenario import ScanSpec, validate

from twin.datasets.spec import DatasetSpec, draw_sample, stream

SHARD_FORMAT = "xrm-twin-dataset-shard/1"
SHARDS = "shards"
WORK = ".work"
_STR = h5py.string_dtype("utf-8")


class DiskFullError(XrmInputError):
    """No space left on the output device (the run stops; nothing half-written is kept)."""


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, including h5py's wrapped write errors."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)  # h5py reports a failed flush as RuntimeError("... errno = 28 ...")
    return isinstance(exc, (OSError, RuntimeError)) and ("No space left" in text or "errno = 28" in text)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` atomically, world-readable (0644: shared folders on clusters)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)


SHARD_EXT = {"hdf5": ".h5", "zarr": ".zarr"}


def shard_name(index: int, fmt: str = "hdf5") -> str:
    return f"sample_{int(index):06d}{SHARD_EXT[fmt]}"


def shard_path(out_dir: str | Path, index: int, fmt: str = "hdf5") -> Path:
    return Path(out_dir) / SHARDS / shard_name(index, fmt)


def row_path(out_dir: str | Path, index: int) -> Path:
    return Path(out_dir) / SHARDS / f"sample_{int(index):06d}.json"


def _hash_file(h, path: str | Path, chunk: int = 1 << 20) -> int:
    """Feed a file's bytes into the hash ``h``; return how many."""
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return n
            h.update(b)
            n += len(b)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    _hash_file(h, path, chunk)
    return h.hexdigest()


def tree_sha256(path: str | Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """SHA-256 of a folder (a Zarr shard) and its size in bytes: every file's relative path
    (POSIX, NUL-terminated) and bytes, in sorted path order."""
    root = Path(path)
    h = hashlib.sha256()
    total = 0
    for p in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(p.relative_to(root).as_posix().encode("utf-8") + b"\0")
        total += _hash_file(h, p, chunk)
    return h.hexdigest(), total


def shard_digest(path: str | Path) -> tuple[str, int]:
    """(SHA-256, bytes) of a shard: an HDF5 file or a Zarr folder."""
    p = Path(path)
    if p.is_dir():
        return tree_sha256(p)
    return sha256_file(p), p.stat().st_size


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default)


def _default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


# --------------------------------------------------------------------------- ground truth

def label_grid_for(spec: ScanSpec) -> tuple[tuple[int, int, int], float, tuple[float, float, float]]:
    """Grid of a parts scene's labels (and of the reconstruction): shape (z, y, x), voxel, origin.

    The scan's field of view (columns x columns x rows at the object) at ``phantom.voxel_um``
    or, by default, the scan voxel; centred on the rotation axis.
    """
    from twin.plan import resolve_geometry

    g = resolve_geometry(spec)
    scan_um = float(g.voxel_size_um)
    v = spec.phantom.get("voxel_um")
    vox = scan_um if v is None else float(v)
    nx = max(1, int(math.ceil(g.cols * scan_um / vox - 1e-9)))
    nz = max(1, int(math.ceil(g.rows * scan_um / vox - 1e-9)))
    shape = (nz, nx, nx)
    origin = tuple(-(n - 1) / 2 * vox / 1000.0 for n in (nx, nx, nz))
    return shape, vox, origin  # type: ignore[return-value]


def parts_labels(spec: ScanSpec) -> dict[str, Any]:
    """Exact labels of a ``kind = "parts"`` scene on :func:`label_grid_for`'s grid.

    The parts are rasterised by :func:`twin.parts_truth.paint_parts`, the code of the
    scene's ``truth.h5``: a voxel takes the part that contains its centre (primitives
    analytically and half-open, ``lo <= x < hi``, ``r < R``; meshes by exact scan
    conversion); where parts nest, the inner part wins, as in the projector
    (:func:`twin.meshes.nesting` on the projector's triangles; of two parts that fill the
    same space the higher ``priority`` is inside). Label 0 is the background, label ``k``
    the ``k``-th distinct material in part order (the projector's material slots);
    ``instances`` holds the part index + 1.
    """
    from twin.parts_truth import paint_parts
    from twin.plan import parts_scene

    parts = list(spec.phantom["parts"])
    if any(isinstance(p, Mapping) and p.get("shape") == "labels" for p in parts):
        raise XrmInputError("datasets label kind = \"parts\" scenes of meshes and primitives; "
                            "voxel parts (shape = \"labels\") are not supported")
    # mesh files relative to the scenario's file, as the projector reads them (twin.plan.resolve)
    base_dir = Path(spec.origin).parent if spec.origin and not spec.origin.startswith("<") else Path(".")
    meshes = parts_scene(parts, base_dir)
    shape, vox, origin = label_grid_for(spec)
    n = len(parts)
    instances = np.zeros(shape, np.int32)
    paint_parts(instances, range(1, n + 1), parts, meshes, origin, vox)
    mats = [m.material for m in meshes]
    slots: list = []
    for m in mats:
        if m not in slots:
            slots.append(m)
    dtype = np.uint8 if len(slots) < 255 else np.uint16
    lut = np.zeros(n + 1, dtype)  # instance (part index + 1) -> material slot
    lut[1:] = [slots.index(m) + 1 for m in mats]
    labels = lut[instances]
    materials = [{"label": 0, "name": "background", "material": "air", "density_g_cm3": 0.0}]
    for k, s in enumerate(slots, start=1):
        first = mats.index(s)
        materials.append({"label": k, "name": meshes[first].name,
                          "material": s.name, "density_g_cm3": float(s.density_g_cm3)})
    return {"labels": labels, "instances": instances, "voxel_size_um": vox, "origin_mm": origin,
            "materials": materials}


def void_defects(voids, materials: list[dict]) -> list[dict]:
    """Defect rows of the placed void spheres."""
    rows = []
    for k, v in enumerate(voids, start=1):
        r = float(v["radius_mm"])
        label = next((m["label"] for m in materials
                      if m["label"] > 0 and m["material"].lower() == str(v["material"]).lower()), -1)
        rows.append({"id": k, "type": "void", "label": int(label), "name": v["name"],
                     "material": v["material"], "center_mm": [float(c) for c in v["center_mm"]],
                     "size_um": 2000.0 * r, "volume_mm3": 4.0 / 3.0 * math.pi * r ** 3,
                     "area_mm2": 4.0 * math.pi * r ** 2})
    return rows


def scenario_for(spec: DatasetSpec, index: int):
    """The sample's draw and its validated :class:`ScanSpec` (battery phantoms get
    ``phantom.voxel_um`` = the scan voxel unless the spec sets it, so labels and the
    reconstruction share one grid)."""
    from twin.plan import resolve_geometry

    draw = draw_sample(spec, index)
    scenario = draw.scenario
    if scenario["phantom"]["kind"] != "parts" and scenario["phantom"].get("voxel_um") is None:
        g = resolve_geometry(validate(scenario, f"{spec.name}[{index}]"))
        scenario["phantom"]["voxel_um"] = float(g.voxel_size_um)
    return draw, validate(scenario, f"{spec.name}[{index}]")


# ---------------------------------------------------------------------------------- write

def _ds(group: h5py.Group, name: str, data: np.ndarray, level: int) -> h5py.Dataset:
    data = np.ascontiguousarray(data)
    kw: dict[str, Any] = {"track_times": False}
    if level > 0 and data.size >= 64:
        kw.update(compression="gzip", compression_opts=level, shuffle=True)
    d = group.create_dataset(name, data=data, **kw)
    group.file.flush()
    return d


def _table(group: h5py.Group, name: str, rows: list[dict], dtype: np.dtype, fields) -> None:
    arr = np.zeros(len(rows), dtype=dtype)
    for i, r in enumerate(rows):
        for f, default in fields:
            v = r.get(f)
            if v is None:
                v = default
            try:
                arr[i][f] = np.asarray(v, float) if isinstance(default, tuple) else v
            except (TypeError, ValueError):
                arr[i][f] = np.asarray(default, float) if isinstance(default, tuple) else default
    d = group.create_dataset(name, data=arr, track_times=False)
    d.attrs["json"] = _attr(canonical_json(rows))


def _fixed_str(values) -> np.dtype:
    """A fixed-length byte-string dtype wide enough for ``values`` (UTF-8).

    Variable-length strings live in HDF5's global heap, whose layout can differ between
    processes for the same content; fixed-length strings keep shards byte-identical.
    """
    width = max([1] + [len(str(v).encode("utf-8")) for v in values])
    return np.dtype(f"S{width}")


def _attr(value):
    """Attribute value with strings as fixed-length UTF-8 bytes (see :func:`_fixed_str`)."""
    return np.bytes_(value.encode("utf-8")) if isinstance(value, str) else value


def write_shard(path: Path, content: Mapping[str, Any], level: int) -> None:
    """Write one shard (``content`` as built by :func:`run_sample`) to ``path``."""
    # no chunk cache: each compressed chunk is placed in the file when its dataset is written,
    # in program order; with a cache, chunks are placed when the cache flushes, in an order
    # that varied between processes and broke byte-identical shards
    with h5py.File(path, "w", track_order=False, rdcc_nbytes=0) as f:
        for k, v in content["attrs"].items():
            f.attrs[k] = _attr(v)
        if "projections" in content:
            p = content["projections"]
            g = f.create_group("projections")
            for k in ("data", "flats", "darks", "angles_deg"):
                _ds(g, k, p[k], level)
            g.attrs["geometry"] = _attr(p["geometry"])
        for name in ("volume", "labels", "instances"):
            if name in content:
                d = _ds(f, name, content[name], level)
                d.attrs["voxel_size_um"] = float(content["voxel_size_um"])
                d.attrs["origin_mm"] = np.asarray(content["origin_mm"], float)
        if "materials" in content:
            mats = content["materials"]
            mdt = np.dtype([("label", "i8"), ("name", _fixed_str(m.get("name", "") for m in mats)),
                            ("material", _fixed_str(m.get("material", "") for m in mats)),
                            ("density_g_cm3", "f8")])
            _table(f, "materials", content["materials"], mdt,
                   [("label", 0), ("name", ""), ("material", ""), ("density_g_cm3", 0.0)])
        if "defects" in content:
            ddt = np.dtype([("id", "i8"), ("type", _fixed_str(d.get("type", "") for d in content["defects"])),
                            ("label", "i8"), ("center_mm", "f8", (3,)),
                            ("size_um", "f8"), ("volume_mm3", "f8")])
            _table(f, "defects", content["defects"], ddt,
                   [("id", 0), ("type", ""), ("label", -1), ("center_mm", (np.nan,) * 3),
                    ("size_um", np.nan), ("volume_mm3", np.nan)])
        if "patches" in content:
            g = f.create_group("patches")
            for k, v in content["patches"].items():
                _ds(g, k, v, level)
        f.attrs["voxel_size_um"] = float(content["voxel_size_um"])
        f.attrs["origin_mm"] = np.asarray(content["origin_mm"], float)


def write_shard_zarr(path: Path, content: Mapping[str, Any], level: int) -> None:
    """Write one shard as a Zarr v3 folder at ``path`` (same layout as :func:`write_shard`)."""
    import zarr
    from zarr.codecs import ZstdCodec

    def arr(group, name, data):
        data = np.ascontiguousarray(data)
        chunks = (min(16, data.shape[0]),) + data.shape[1:] if data.ndim else ()
        a = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks or None,
                               # zstd, not gzip: a gzip header carries the time of writing
                               compressors=ZstdCodec(level=level) if level > 0 else None)
        a[...] = data
        return a

    root = zarr.open_group(store=str(path), mode="w", zarr_format=3)
    attrs = {k: v for k, v in content["attrs"].items()}
    attrs["voxel_size_um"] = float(content["voxel_size_um"])
    attrs["origin_mm"] = [float(v) for v in content["origin_mm"]]
    root.attrs.update(attrs)
    if "projections" in content:
        p = content["projections"]
        g = root.create_group("projections")
        for k in ("data", "flats", "darks", "angles_deg"):
            arr(g, k, p[k])
        g.attrs["geometry"] = p["geometry"]
    for name in ("volume", "labels", "instances"):
        if name in content:
            a = arr(root, name, content[name])
            a.attrs.update({"voxel_size_um": float(content["voxel_size_um"]),
                            "origin_mm": [float(v) for v in content["origin_mm"]]})
    for name in ("materials", "defects"):
        if name in content:
            root.create_group(name).attrs["json"] = canonical_json(content[name])
    if "patches" in content:
        g = root.create_group("patches")
        for k, v in content["patches"].items():
            arr(g, k, v)


def _write_zarr_atomic(final: Path, content: Mapping[str, Any], level: int) -> tuple[str, int]:
    """Write a Zarr shard into a hidden ``.part`` folder beside ``final``, then rename it."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        write_shard_zarr(tmp, content, level)
        digest = tree_sha256(tmp)
        if final.exists():  # a corrupted shard being remade
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return digest


def _patches(spec: DatasetSpec, index: int, volume: np.ndarray, labels: np.ndarray) -> dict:
    size = spec.store["patches"]["size"]
    n = spec.store["patches"]["count"]
    if any(s > d for s, d in zip(size, volume.shape)):
        raise XrmInputError(f"store.patches.size = {size} (z, y, x voxels) does not fit the "
                            f"volume of sample {index}, shape {list(volume.shape)}")
    rng = stream(spec, index, 4)
    corners = np.array([[int(rng.integers(0, d - s, endpoint=True)) for s, d in zip(size, volume.shape)]
                        for _ in range(n)], np.int64)
    sl = [tuple(slice(c, c + s) for c, s in zip(cz, size)) for cz in corners]
    return {"volume": np.stack([volume[s] for s in sl]).astype(np.float32),
            "labels": np.stack([labels[s] for s in sl]),
            "corner_zyx": corners}


def build_sample(spec: DatasetSpec, index: int, work_dir: Path) -> tuple[dict, Any]:
    """Simulate (and reconstruct) sample ``index`` in ``work_dir``; return the shard content."""
    from twin.nxtomo import read_nxtomo
    from twin.runtime import init_taichi
    from twin.simulate import simulate_to
    from twin.truth_io import read_truth

    draw, scan = scenario_for(spec, index)
    arch = init_taichi(spec.arch, cpu_threads=spec.threads_per_task)
    simulate_to(scan, work_dir, arch=arch, quiet=True)
    nx = read_nxtomo(work_dir / "projections.h5")
    if scan.phantom["kind"] == "parts":
        t = parts_labels(scan)
        defects = void_defects(draw.voids, t["materials"])
    else:
        tr = read_truth(work_dir / "truth.h5")
        vs = np.atleast_1d(np.asarray(tr["voxel_size_um"], float))
        if len(set(vs.tolist())) != 1:
            raise XrmInputError(f"sample {index}: anisotropic truth voxels {vs.tolist()} are not supported")
        t = {"labels": tr["labels"], "instances": tr["instances"], "voxel_size_um": float(vs[0]),
             "origin_mm": tuple(float(v) for v in tr["origin_mm"]), "materials": tr["materials"]}
        defects = tr["defects"]
    content: dict[str, Any] = {"voxel_size_um": t["voxel_size_um"], "origin_mm": t["origin_mm"]}
    st = spec.store
    if st["projections"]:
        content["projections"] = {
            "data": nx["projections"], "flats": nx["flats"], "darks": nx["darks"],
            "angles_deg": np.asarray(nx["angles_deg"], np.float64),
            "geometry": canonical_json(dataclasses.asdict(nx["geometry"]))}
    volume = None
    if st["recon"] or st["patches"] is not None:
        from recon.pipeline import reconstruct

        opts = {k: v for k, v in scan.recon.items()
                if k in ("filter", "cutoff", "ring_removal", "n_iter", "truncation_mode", "center")}
        rr = reconstruct(nx["projections"], nx["geometry"], flats=nx["flats"], darks=nx["darks"],
                         angles_deg=nx["angles_deg"], algorithm=scan.recon["algorithm"],
                         vol_shape=t["labels"].shape, voxel_size_um=t["voxel_size_um"],
                         origin_mm=t["origin_mm"], arch="cuda" if arch == "cuda" else "cpu",
                         progress=False, **opts)
        volume = np.asarray(rr.volume, np.float32)
        if st["recon"]:
            content["volume"] = volume
    if st["labels"]:
        content["labels"] = t["labels"]
        if t.get("instances") is not None:
            content["instances"] = np.asarray(t["instances"], np.int32)
        content["materials"] = [{k: m[k] for k in ("label", "name", "material", "density_g_cm3")}
                                for m in t["materials"]]
    if st["defects"]:
        content["defects"] = json.loads(canonical_json(list(defects)))
    if st["patches"] is not None:
        content["patches"] = _patches(spec, index, volume, t["labels"])
    content["attrs"] = {
        "format": SHARD_FORMAT, "index": int(index), "split": draw.split, "base": draw.base,
        "spec_hash": spec.spec_hash, "dataset": spec.name, "params": canonical_json(draw.params),
        "scenario": canonical_json(scan.to_toml_dict()), "software": f"xrm-twin {__version__}"}
    return content, draw


def run_sample(spec: DatasetSpec, index: int, out_dir: str | Path) -> dict[str, Any]:
    """Make sample ``index`` of ``spec`` under ``out_dir``; return its manifest row.

    Pure in (spec, index): the shard's bytes and the row depend on nothing else. The shard
    goes to ``shards/sample_NNNNNN.h5`` through a temporary name (renamed when complete) and
    the row to ``shards/sample_NNNNNN.json``. Scratch files live in ``out_dir/.work`` and are
    removed on return or error. A full disk raises :class:`DiskFullError` with nothing
    half-written left behind.

    The row: ``index``, ``split``, ``base``, ``shard`` (relative path), ``bytes``, ``sha256``,
    ``seed`` (the scenario's), ``params`` (drawn values by key), ``spec_hash``.
    """
    out = Path(out_dir)
    fmt = spec.store.get("format", "hdf5")
    final = shard_path(out, index, fmt)
    work_root = out / WORK
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        work_root.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"sample_{int(index):06d}.", dir=work_root))
        try:
            content, draw = build_sample(spec, index, work)
            if fmt == "zarr":
                digest, size = _write_zarr_atomic(final, content, spec.store["compression"])
            else:
                with atomic_path(final) as tmp:
                    write_shard(tmp, content, spec.store["compression"])
                    os.chmod(tmp, 0o644)
                    digest = sha256_file(tmp)
                    size = tmp.stat().st_size
        finally:
            shutil.rmtree(work, ignore_errors=True)
        row = {"index": int(index), "split": draw.split, "base": draw.base,
               "shard": f"{SHARDS}/{final.name}", "bytes": int(size), "sha256": digest,
               "seed": int(draw.scenario["seed"]), "params": json.loads(canonical_json(draw.params)),
               "spec_hash": spec.spec_hash}
        write_text_atomic(row_path(out, index), canonical_json(row) + "\n")
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc):
            with contextlib.suppress(OSError):
                row_path(out, index).unlink()
            raise DiskFullError(f"no space left on the device of {str(out)!r} while writing sample "
                                f"{index}: {exc}") from None
        raise
    row_out = dict(row)
    row_out["_elapsed_s"] = time.perf_counter() - t0
    row_out["_cpu_s"] = time.process_time() - c0
    return row_out


def read_row(out_dir: str | Path, index: int) -> dict | None:
    """The sidecar row of sample ``index``, or None when absent or unreadable."""
    p = row_path(out_dir, index)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def verify_sample(out_dir: str | Path, index: int, spec_hash: str | None = None,
                  row: Mapping[str, Any] | None = None) -> str | None:
    """None if sample ``index`` is complete and its checksum matches; else the reason."""
    row = row if row is not None else read_row(out_dir, index)
    if row is None:
        return "no manifest row"
    if spec_hash is not None and row.get("spec_hash") != spec_hash:
        return "made from another spec"
    p = Path(out_dir) / row["shard"]
    if not (p.is_file() or p.is_dir()):
        return "shard missing"
    if p.is_file() and p.stat().st_size != row.get("bytes"):
        return f"size {p.stat().st_size} != {row.get('bytes')} bytes"
    digest, size = shard_digest(p)
    if size != row.get("bytes"):
        return f"size {size} != {row.get('bytes')} bytes"
    if digest != row.get("sha256"):
        return "SHA-256 mismatch"
    return None
