"""Read a dataset: samples as numpy arrays, random patches, PyTorch-friendly (no torch import).

>>> ds = DatasetReader("runs/example", split="train", patch_size=(16, 16, 16), patches_per_sample=8)
>>> item = ds[0]            # {"volume": float32 (16,16,16), "labels": int64 (16,16,16), ...}
>>> # torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)

``DatasetReader`` is a map-style dataset (``__len__``/``__getitem__``); it holds no open file
(each item opens its shard), so it pickles into DataLoader worker processes. Patches are
random but reproducible: item ``i`` of epoch ``e`` draws from ``default_rng([seed, e, i])``;
call :meth:`set_epoch` each epoch for fresh patches.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from twin.errors import XrmInputError

from twin.datasets.spec import to_toml

FIELDS = ("volume", "labels", "instances")


class DatasetReader:
    """Samples of an ``xrm-twin dataset`` folder.

    Parameters
    ----------
    root : path
        The dataset folder (with ``manifest.jsonl``).
    split : str or sequence of str, optional
        ``"train"``, ``"val"``, ``"test"`` (or several); default all samples.
    patch_size : (pz, py, px) or int, optional
        Return random patches of this size (voxels) instead of whole volumes.
    patches_per_sample : int
        Items per sample when patching (``len = samples x patches_per_sample``).
    foreground : float
        Fraction of patches centred on a random non-background voxel (0 = uniform corners).
    source : {"volume", "patches"}
        ``"patches"`` serves the patches stored in the shards (``[store] patches``) instead.
    fields : sequence of str
        Arrays per item among ``volume``, ``labels``, ``instances``.
    seed : int
        Seed of the patch positions.
    """

    def __init__(self, root: str | Path, split: str | Sequence[str] | None = None, *,
                 patch_size: int | Sequence[int] | None = None, patches_per_sample: int = 1,
                 foreground: float = 0.0, source: str = "volume",
                 fields: Sequence[str] = ("volume", "labels"), seed: int = 0):
        self.root = Path(root)
        mf = self.root / "manifest.jsonl"
        if not mf.is_file():
            raise XrmInputError(f"{str(self.root)!r} has no manifest.jsonl: not an xrm-twin dataset "
                                "(or the run has not finished; run it again to resume)")
        rows = [json.loads(line) for line in mf.read_text(encoding="utf-8").splitlines() if line.strip()]
        if split is not None:
            wanted = {split} if isinstance(split, str) else set(split)
            bad = wanted - {"train", "val", "test"}
            if bad:
                raise XrmInputError(f"split must be train, val or test, got {sorted(bad)}")
            rows = [r for r in rows if r["split"] in wanted]
        self.rows = rows
        for f in fields:
            if f not in FIELDS:
                raise XrmInputError(f"field {f!r} unknown; allowed: {', '.join(FIELDS)}")
        self.fields = tuple(fields)
        if source not in ("volume", "patches"):
            raise XrmInputError(f"source must be 'volume' or 'patches', got {source!r}")
        self.source = source
        if isinstance(patch_size, int):
            patch_size = (patch_size,) * 3
        self.patch_size = None if patch_size is None else tuple(int(s) for s in patch_size)
        if self.patch_size is not None and (len(self.patch_size) != 3 or min(self.patch_size) < 1):
            raise XrmInputError(f"patch_size must be 3 positive integers, got {patch_size!r}")
        if not 0.0 <= foreground <= 1.0:
            raise XrmInputError(f"foreground must be in [0, 1], got {foreground}")
        self.foreground = float(foreground)
        self.patches_per_sample = int(patches_per_sample) if self.patch_size is not None else 1
        if self.patches_per_sample < 1:
            raise XrmInputError("patches_per_sample must be >= 1")
        self.seed = int(seed)
        self.epoch = 0
        self._stored: list[tuple[int, int]] | None = None
        if source == "patches":
            self._stored = []
            for k in range(len(rows)):
                with self._open(k) as f:
                    if "patches" not in f:
                        raise XrmInputError(f"{rows[k]['shard']}: no stored patches ([store] patches)")
                    n = f["patches/volume"].shape[0]
                self._stored += [(k, j) for j in range(n)]

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        if self._stored is not None:
            return len(self._stored)
        return len(self.rows) * self.patches_per_sample

    def set_epoch(self, epoch: int) -> None:
        """Fresh random patches for a new epoch (reproducible per (seed, epoch, item))."""
        self.epoch = int(epoch)

    def _open(self, k: int):
        """The shard of sample ``k`` as a context manager: an ``h5py.File``, or a Zarr group
        (``.zarr`` folder) whose items and ``attrs`` read the same way."""
        p = self.root / self.rows[k]["shard"]
        if p.suffix == ".zarr":
            try:
                import zarr
            except ImportError:
                raise XrmInputError(f"{str(p)!r} is a Zarr shard: pip install 'xrm-twin[zarr]'") from None
            try:
                return contextlib.nullcontext(zarr.open_group(store=str(p), mode="r"))
            except (OSError, ValueError, KeyError) as exc:
                raise XrmInputError(f"cannot open shard {str(p)!r}: {exc}") from None
        try:
            return h5py.File(p, "r")
        except OSError as exc:
            raise XrmInputError(f"cannot open shard {str(p)!r}: {exc}") from None

    @staticmethod
    def _where(f) -> str:
        return str(getattr(f, "filename", None) or getattr(f.store, "root", f.store))

    def _read(self, f, name: str, sel=Ellipsis) -> np.ndarray:
        if name not in f:
            what = {"volume": "store.recon", "labels": "store.labels",
                    "instances": "store.labels"}.get(name, name)
            raise XrmInputError(f"{self._where(f)}: no /{name} in the shard (not stored; see {what})")
        a = f[name][sel]
        if name == "volume":
            return np.asarray(a, np.float32)
        return np.asarray(a, np.int64)

    # ------------------------------------------------------------------ items
    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range ({len(self)} items)")
        i = int(i) % len(self)
        if self._stored is not None:
            k, j = self._stored[i]
            with self._open(k) as f:
                out = {name: self._read(f["patches"], name, j) for name in self.fields if name != "instances"}
                out["corner_zyx"] = np.asarray(f["patches/corner_zyx"][j], np.int64)
            out["index"] = int(self.rows[k]["index"])
            return out
        k = i // self.patches_per_sample
        with self._open(k) as f:
            if self.patch_size is None:
                out = {name: self._read(f, name) for name in self.fields}
            else:
                corner = self._corner(f, i)
                sel = tuple(slice(c, c + s) for c, s in zip(corner, self.patch_size))
                out = {name: self._read(f, name, sel) for name in self.fields}
                out["corner_zyx"] = np.asarray(corner, np.int64)
        out["index"] = int(self.rows[k]["index"])
        return out

    def _corner(self, f, i: int) -> tuple[int, ...]:
        key = "volume" if "volume" in f else "labels"
        shape = f[key].shape
        if any(s > d for s, d in zip(self.patch_size, shape)):
            raise XrmInputError(f"patch_size {self.patch_size} does not fit volume {shape} of {self._where(f)}")
        rng = np.random.default_rng([self.seed, self.epoch, i])
        hi = [d - s for s, d in zip(self.patch_size, shape)]
        if self.foreground > 0 and "labels" in f and rng.random() < self.foreground:
            fg = np.argwhere(f["labels"][...] > 0)
            if len(fg):
                c = fg[int(rng.integers(len(fg)))]
                return tuple(int(min(max(c[a] - self.patch_size[a] // 2, 0), hi[a])) for a in range(3))
        return tuple(int(rng.integers(0, h, endpoint=True)) for h in hi)

    def samples(self) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
        """Whole samples: (volume, labels, metadata) in manifest order."""
        for k in range(len(self.rows)):
            with self._open(k) as f:
                vol = self._read(f, "volume") if "volume" in f else None
                lab = self._read(f, "labels") if "labels" in f else None
            yield vol, lab, self.metadata(k)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    # ------------------------------------------------------------------ metadata
    def metadata(self, k: int) -> dict[str, Any]:
        """Sample ``k`` (position in this reader): manifest row, scenario, materials, defects, grid."""
        row = dict(self.rows[k])
        with self._open(k) as f:
            row["scenario"] = json.loads(f.attrs["scenario"])
            row["voxel_size_um"] = float(f.attrs["voxel_size_um"])
            row["origin_mm"] = [float(v) for v in f.attrs["origin_mm"]]
            row["materials"] = json.loads(f["materials"].attrs["json"]) if "materials" in f else []
            row["defects"] = json.loads(f["defects"].attrs["json"]) if "defects" in f else []
        return row

    def scenario_toml(self, k: int) -> str:
        """The complete scenario of sample ``k`` as TOML: ``xrm-twin simulate`` on it reproduces
        the sample's projections (and, for battery phantoms, its ``truth.h5``)."""
        return to_toml(self.metadata(k)["scenario"])

    def class_names(self) -> list[str]:
        """Label names of the first sample (label value -> component name)."""
        mats = self.metadata(0)["materials"] if self.rows else []
        return [m["name"] for m in sorted(mats, key=lambda m: m["label"])]
