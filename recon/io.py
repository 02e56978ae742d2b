"""``recon.h5`` and TIFF stacks: the reconstructed volume on disk (``shared/DESIGN.md``).

``recon.h5``: ``/volume`` float32 linear attenuation in 1/mm, ``[z, y, x]``, attributes
``voxel_size_um`` and ``origin_mm`` (x, y, z of the centre of voxel [0, 0, 0]); written
atomically. A TIFF stack (one multi-page float32 file, ImageJ-readable, z pages) for
Dragonfly/Avizo/ImageJ on request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from twin.atomic import atomic_path
from twin.errors import XrmInputError


def write_recon(path, volume: np.ndarray, voxel_size_um: float, origin_mm, *,
                attrs: Mapping[str, Any] | None = None,
                undenoised: np.ndarray | None = None) -> None:
    """Write ``recon.h5`` atomically: ``/volume`` and, when a denoiser ran, the volume before it
    as ``/volume_undenoised`` (faint large defects are searched there: patch denoisers leave
    structured residue, :mod:`recon.plane_filter`)."""
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise XrmInputError(f"volume must be 3-D [z, y, x], got shape {vol.shape}")
    if undenoised is not None and np.shape(undenoised) != vol.shape:
        raise XrmInputError(f"undenoised volume {np.shape(undenoised)} and volume {vol.shape} differ")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", rdcc_nbytes=0) as f:
            d = f.create_dataset("volume", data=vol, chunks=(1,) + vol.shape[1:])
            for target in (d, f):
                target.attrs["voxel_size_um"] = float(voxel_size_um)
                target.attrs["origin_mm"] = np.asarray(origin_mm, float)
            d.attrs["units"] = "1/mm"
            if undenoised is not None:
                u = f.create_dataset("volume_undenoised", data=np.asarray(undenoised, np.float32),
                                     chunks=(1,) + vol.shape[1:])
                u.attrs["units"] = "1/mm"
            for k, v in (attrs or {}).items():
                f.attrs[k] = v if isinstance(v, (int, float, str, np.ndarray)) else json.dumps(v, default=str)


def write_segmentation(path, labels: np.ndarray, names: Mapping[int, str], voxel_size_um: float,
                       origin_mm, *, attrs: Mapping[str, Any] | None = None,
                       defects: np.ndarray | None = None) -> None:
    """Write a segmentation (``segmentation.h5``) atomically: ``/labels`` (uint8 or uint16,
    gzip) and ``/materials`` (label, name), attributes ``voxel_size_um`` and ``origin_mm``; the
    layout :func:`read_volume` (and ``xrm-twin measure``) reads as a label file.

    ``defects`` (same shape, integer): the detected defects, value ``i + 1`` on the voxels of
    row ``i`` of report.json ``defects.detected`` (``/defects``, gzip)."""
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise XrmInputError(f"labels must be 3-D [z, y, x], got shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() > 65535):
        raise XrmInputError("labels must lie in 0..65535")
    lab = lab.astype(np.uint8 if lab.max(initial=0) < 256 else np.uint16)
    mdt = np.dtype([("label", "i8"), ("name", h5py.string_dtype())])
    rows = np.array([(int(k), str(v)) for k, v in sorted(names.items())], dtype=mdt)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", rdcc_nbytes=0) as f:
            d = f.create_dataset("labels", data=lab, compression="gzip", compression_opts=1,
                                 shuffle=True)
            for target in (d, f):
                target.attrs["voxel_size_um"] = float(voxel_size_um)
                target.attrs["origin_mm"] = np.asarray(origin_mm, float)
            f.create_dataset("materials", data=rows)
            if defects is not None:
                dm = np.asarray(defects)
                if dm.shape != lab.shape:
                    raise XrmInputError(f"defect map {dm.shape} and labels {lab.shape} differ in shape")
                dd = f.create_dataset("defects", data=dm, compression="gzip", compression_opts=1,
                                      shuffle=True)
                dd.attrs["meaning"] = "i + 1 on the voxels of report.json defects.detected[i], 0 elsewhere"
            for k, v in (attrs or {}).items():
                f.attrs[k] = v if isinstance(v, (int, float, str, np.ndarray)) else json.dumps(v, default=str)


def read_volume(path) -> dict[str, Any]:
    """Read ``recon.h5`` (``/volume``) or any HDF5 with ``/labels``.

    Returns a dict with ``volume`` or ``labels``, ``voxel_size_um`` and ``origin_mm``.

    Raises
    ------
    XrmInputError
        Not HDF5, no ``/volume`` or ``/labels``, or no ``voxel_size_um`` attribute.
    """
    p = Path(path)
    if not p.is_file():
        raise XrmInputError(f"volume file {str(p)!r} does not exist")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise XrmInputError(f"cannot open {str(p)!r} as HDF5: {exc}") from None
    with f:
        key = "volume" if "volume" in f else "labels" if "labels" in f else None
        if key is None:
            raise XrmInputError(f"{p}: neither /volume (a recon.h5) nor /labels (a truth.h5) is present")
        ds = f[key]
        vs = ds.attrs.get("voxel_size_um", f.attrs.get("voxel_size_um"))
        if vs is None:
            raise XrmInputError(f"{p}: /{key} has no voxel_size_um attribute: the voxel size is needed")
        origin = ds.attrs.get("origin_mm", f.attrs.get("origin_mm", (0.0, 0.0, 0.0)))
        out = {key: ds[...], "voxel_size_um": vs, "origin_mm": tuple(float(v) for v in origin)}
        out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()
                        if k not in ("voxel_size_um", "origin_mm")}
        if key == "volume" and "volume_undenoised" in f:
            out["volume_undenoised"] = f["volume_undenoised"][...]
        if key == "labels" and "defects" in f:
            out["defects"] = f["defects"][...]
        if key == "labels" and "materials" in f:
            rows = f["materials"][...]
            out["names"] = {int(r["label"]): (r["name"].decode() if isinstance(r["name"], bytes) else str(r["name"]))
                            for r in rows}
    return out


def write_tiff_stack(path, volume: np.ndarray, voxel_size_um: float) -> None:
    """A float32 multi-page TIFF (z pages) with the voxel size in ImageJ metadata."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.asarray(volume, np.float32), imagej=True,
                         resolution=(1e4 / voxel_size_um, 1e4 / voxel_size_um),
                         metadata={"spacing": voxel_size_um, "unit": "um", "axes": "ZYX"})
