"""Dataset spec (TOML) validated into a frozen :class:`DatasetSpec`, and the per-sample draw.

A dataset spec names one or more base scenarios, distributions for any scenario key, how many
samples, what to store and the train/val/test split::

    name = "cell-voids"
    count = 24
    seed = 7
    base = "cell-base.toml"            # path (relative to this file) or built-in; or a list
    # [scenario] ...                   # or an inline base scenario instead of `base`

    [parameters]                       # any scenario key; parts addressed by name or index
    source.kvp = { uniform = [60, 100] }
    source.power_w = { loguniform = [2, 10] }
    detector.exposure_s = { normal = [1.0, 0.1], min = 0.7, max = 1.3 }
    source.filter = { choices = ["LE1", "LE2"], weights = [3, 1] }
    geometry.projections = { integers = [14, 18] }      # inclusive
    phantom.parts.anode.radius_mm = { uniform = [0.40, 0.48] }
    geometry.arc_deg = 360                              # a fixed value

    [voids]                            # random void spheres inside one part (kind = "parts")
    host = "anode"
    count = { integers = [0, 3] }
    radius_mm = { uniform = [0.03, 0.07] }

    [store]
    projections = true
    recon = true
    labels = true
    defects = true
    patches = { size = [16, 16, 16], count = 4 }

    [split]
    train = 0.8
    val = 0.1
    test = 0.1

Every sample is a pure function of (spec, index): its random streams are
``numpy.random.SeedSequence(entropy=spec_hash, spawn_key=(index, stream, ...))``. The spec
hash covers everything that changes a sample's bytes (base scenario contents, distributions,
store options, seed, software version) but not ``count``: raising ``count`` extends a dataset
and the first samples stay the same.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from twin import __version__
from twin.errors import XrmInputError, unknown
from twin.scenario import SCHEMA, SECTIONS, load_raw, parse_override, validate

TOP_KEYS = ("name", "description", "count", "seed", "base", "base_weights", "scenario", "arch",
            "threads_per_task", "parameters", "voids", "store", "split")
DIST_KINDS = ("uniform", "loguniform", "normal", "integers", "choices", "value")
DIST_EXTRA = {"normal": ("min", "max"), "choices": ("weights",)}
STORE_KEYS = ("projections", "recon", "labels", "defects", "patches", "compression", "format")
SHARD_FORMATS = ("hdf5", "zarr")
SPLITS = ("train", "val", "test")
VOID_KEYS = ("host", "count", "radius_mm", "material", "density_g_cm3", "margin_mm",
             "subdivisions", "max_tries")
PART_KEYS = ("shape", "file", "material", "density_g_cm3", "priority", "repair", "name",
             "center_mm", "size_mm", "radius_mm", "height_mm", "inner_radius_mm", "axis",
             "scale_to_mm", "sections", "subdivisions")
ARCHES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Param:
    """One drawn (or fixed) scenario key: ``path`` such as ``"source.kvp"``."""

    path: str
    kind: str
    args: Any
    lo: float | None = None
    hi: float | None = None
    weights: tuple[float, ...] | None = None

    def canonical(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "args": self.args, "lo": self.lo,
                "hi": self.hi, "weights": self.weights}


@dataclass(frozen=True)
class DatasetSpec:
    """A validated dataset spec (see the module docstring).

    Attributes
    ----------
    bases : tuple of (str, dict)
        Base scenarios: a label (file stem or "inline") and the raw scenario dict, with part
        ``file`` paths made absolute.
    params : tuple of Param
        Sorted by path.
    store : dict
        ``projections``, ``recon``, ``labels``, ``defects`` (bool), ``patches`` (None or
        ``{"size": (pz, py, px), "count": n}``), ``compression`` (gzip level, 0 = none).
    split : dict
        Fractions for train, val, test (sum 1).
    raw : dict
        The spec as given (after ``--set`` overrides).
    """

    name: str
    description: str
    count: int
    seed: int
    bases: tuple[tuple[str, dict], ...]
    base_weights: tuple[float, ...] | None
    params: tuple[Param, ...]
    voids: dict | None
    store: dict
    split: dict
    arch: str
    threads_per_task: int
    raw: dict = field(repr=False, default_factory=dict)
    origin: str = "<memory>"

    def canonical(self) -> dict[str, Any]:
        """Everything that changes a sample's bytes (``count`` and ``description`` excluded)."""
        return {"format": "xrm-twin-dataset-spec/1", "software": f"xrm-twin {__version__}",
                "name": self.name, "seed": self.seed,
                "bases": [[label, data] for label, data in self.bases],
                "base_weights": self.base_weights,
                "params": [p.canonical() for p in self.params], "voids": self.voids,
                "store": self.store, "split": self.split, "arch": self.arch,
                "threads_per_task": self.threads_per_task}

    @property
    def spec_hash(self) -> str:
        """SHA-256 (hex) of :meth:`canonical` as canonical JSON."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), default=_json_default)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_json_dict(self) -> dict[str, Any]:
        """For ``dataset.json``: the canonical spec plus count, description and hash."""
        d = self.canonical()
        d.update(count=self.count, description=self.description, spec_hash=self.spec_hash,
                 origin=self.origin)
        return json.loads(json.dumps(d, default=_json_default))

    def with_count(self, count: int) -> "DatasetSpec":
        import dataclasses

        return dataclasses.replace(self, count=int(count))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------------- loading

def apply_spec_overrides(data: dict[str, Any], overrides: list[str] | None, origin: str) -> dict[str, Any]:
    """Apply ``--set key=value`` to a raw spec dict (any key, dotted; ``count=3``)."""
    data = copy.deepcopy(data)
    for text in overrides or ():
        path, value = parse_override(text)
        if path[0] not in TOP_KEYS:
            raise XrmInputError(f"--set {text}: " + str(unknown("dataset spec key", path[0], TOP_KEYS)))
        node = data
        for k in path[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise XrmInputError(f"--set {text}: {k} is not a table in {origin}")
            node = nxt
        node[path[-1]] = value
    return data


def load_dataset_spec(source: str | Path, overrides: list[str] | None = None) -> DatasetSpec:
    """Read, override and validate a dataset spec TOML file."""
    p = Path(source)
    if not p.is_file():
        import scenarios

        folder = Path(scenarios.__file__).parent / "datasets"
        builtin = folder / f"{source}.toml"
        if not p.suffix and builtin.is_file():
            p = builtin
        else:
            names = sorted(q.stem for q in folder.glob("*.toml"))
            raise XrmInputError(f"dataset spec {str(source)!r} does not exist (built-in dataset specs: "
                                f"{', '.join(names) or 'none'})")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise XrmInputError(f"{p}: not valid TOML: {exc}") from None
    data = apply_spec_overrides(data, overrides, str(p))
    data.setdefault("name", p.stem)
    return validate_dataset_spec(data, origin=str(p), base_dir=p.resolve().parent)


def _absolute_files(scenario: dict, base_dir: Path) -> dict:
    scenario = copy.deepcopy(scenario)
    parts = scenario.get("phantom", {}).get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("file"), str):
                f = Path(part["file"])
                if not f.is_absolute():
                    part["file"] = str((base_dir / f).resolve())
    return scenario


def _load_bases(data: Mapping[str, Any], origin: str, base_dir: Path) -> list[tuple[str, dict]]:
    has_base, has_inline = "base" in data, "scenario" in data
    if has_base == has_inline:
        raise XrmInputError(f"{origin}: give exactly one of base = \"scenario.toml\" (or a list) "
                            "and an inline [scenario] table")
    if has_inline:
        if not isinstance(data["scenario"], Mapping):
            raise XrmInputError(f"{origin}: [scenario] must be a table")
        return [("inline", _absolute_files(dict(data["scenario"]), base_dir))]
    base = data["base"]
    names = [base] if isinstance(base, str) else base
    if not isinstance(names, list) or not names or not all(isinstance(b, str) for b in names):
        raise XrmInputError(f"{origin}: base must be a scenario path or built-in name, or a list of them; "
                            f"got {base!r}")
    out = []
    for b in names:
        candidate = base_dir / b
        raw, where = load_raw(candidate if candidate.is_file() else b)
        out.append((Path(where).stem, _absolute_files(raw, Path(where).resolve().parent)))
    labels = [lbl for lbl, _ in out]
    if len(set(labels)) != len(labels):
        raise XrmInputError(f"{origin}: base scenarios must have distinct file names, got {labels}")
    return out


def _num(where: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise XrmInputError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def _pair(where: str, v: Any) -> tuple[Any, Any]:
    if not isinstance(v, list) or len(v) != 2:
        raise XrmInputError(f"{where}: expected [min, max] (two numbers), got {v!r}")
    return v[0], v[1]


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def parse_distribution(path: str, node: Any, origin: str) -> Param:
    """A leaf of ``[parameters]``: a distribution table or a fixed value."""
    where = f"{origin}: parameters.{path}"
    if not isinstance(node, Mapping):
        return Param(path, "value", copy.deepcopy(node))
    kinds = [k for k in node if k in DIST_KINDS]
    if len(kinds) != 1:
        raise XrmInputError(f"{where}: give exactly one of {', '.join(DIST_KINDS)}, got {sorted(node)}")
    kind = kinds[0]
    allowed = (kind,) + DIST_EXTRA.get(kind, ())
    for k in node:
        if k not in allowed:
            raise XrmInputError(f"{where}: " + str(unknown(f"key of a {kind} distribution", k, allowed)))
    v = node[kind]
    if kind == "value":
        return Param(path, "value", copy.deepcopy(v))
    if kind in ("uniform", "loguniform"):
        a, b = (_num(f"{where}.{kind}", x) for x in _pair(f"{where}.{kind}", v))
        if a > b:
            raise XrmInputError(f"{where}.{kind} = {v!r}: min {a:g} > max {b:g}")
        if kind == "loguniform" and a <= 0:
            raise XrmInputError(f"{where}.loguniform = {v!r}: bounds must be > 0")
        return Param(path, kind, [a, b])
    if kind == "integers":
        a, b = _pair(f"{where}.integers", v)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
            raise XrmInputError(f"{where}.integers = {v!r}: expected two integers [min, max] (inclusive)")
        if a > b:
            raise XrmInputError(f"{where}.integers = {v!r}: min {a} > max {b}")
        return Param(path, kind, [int(a), int(b)])
    if kind == "normal":
        mean, sd = (_num(f"{where}.normal", x) for x in _pair(f"{where}.normal", v))
        if sd < 0:
            raise XrmInputError(f"{where}.normal = {v!r}: standard deviation must be >= 0")
        lo = _num(f"{where}.min", node["min"]) if "min" in node else None
        hi = _num(f"{where}.max", node["max"]) if "max" in node else None
        if lo is not None and hi is not None and lo > hi:
            raise XrmInputError(f"{where}: min {lo:g} > max {hi:g}")
        lo_ = -math.inf if lo is None else lo
        hi_ = math.inf if hi is None else hi
        if sd == 0:
            if not lo_ <= mean <= hi_:
                raise XrmInputError(f"{where}: normal [{mean:g}, 0] lies outside [min, max]")
        elif _phi((hi_ - mean) / sd) - _phi((lo_ - mean) / sd) <= 1e-12:
            raise XrmInputError(f"{where}: [min, max] = [{lo_:g}, {hi_:g}] holds no probability of "
                                f"normal(mean {mean:g}, sd {sd:g})")
        return Param(path, kind, [mean, sd], lo, hi)
    # choices
    if not isinstance(v, list) or not v:
        raise XrmInputError(f"{where}.choices: expected a non-empty list, got {v!r}")
    w = None
    if "weights" in node:
        ws = node["weights"]
        if not isinstance(ws, list) or len(ws) != len(v):
            raise XrmInputError(f"{where}.weights: expected {len(v)} numbers, got {ws!r}")
        w = tuple(_num(f"{where}.weights", x) for x in ws)
        if min(w) < 0 or sum(w) <= 0:
            raise XrmInputError(f"{where}.weights = {ws!r}: must be >= 0 with a positive sum")
    return Param(path, kind, copy.deepcopy(v), weights=w)


def _flatten_params(node: Mapping[str, Any], prefix: str, origin: str) -> list[Param]:
    out = []
    for k, v in node.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and not any(kk in DIST_KINDS for kk in v):
            if not v:
                raise XrmInputError(f"{origin}: parameters.{path} is an empty table")
            out.extend(_flatten_params(v, path, origin))
        else:
            out.append(parse_distribution(path, v, origin))
    return out


def _part_index(parts: list, token: str) -> int | None:
    for i, p in enumerate(parts):
        if isinstance(p, Mapping) and p.get("name") == token:
            return i
    if token.isdigit() and int(token) < len(parts):
        return int(token)
    return None


def check_param_path(path: str, scenario: Mapping[str, Any], where: str) -> None:
    """Refuse a parameter that names no key of the base scenario (with a did-you-mean)."""
    keys = path.split(".")
    if len(keys) == 1:
        if keys[0] not in SCHEMA[""]:
            raise XrmInputError(f"{where}: " + str(unknown("parameter", path, _known_paths(scenario))))
        return
    section = keys[0]
    if section not in SECTIONS:
        raise XrmInputError(f"{where}: " + str(unknown("parameter", path, _known_paths(scenario))))
    given = scenario.get(section, {})
    if section == "phantom" and keys[1] == "parts":
        parts = given.get("parts", [])
        if len(keys) != 4:
            raise XrmInputError(f"{where}: a part parameter is phantom.parts.<name or index>.<key>, got {path!r}")
        i = _part_index(parts, keys[2])
        if i is None:
            names = [str(p.get("name", j)) for j, p in enumerate(parts) if isinstance(p, Mapping)]
            raise XrmInputError(f"{where}: " + str(unknown("part", keys[2], names or ["(no parts)"])))
        if keys[3] not in PART_KEYS:
            raise XrmInputError(f"{where}: " + str(unknown(f"key of part {keys[2]!r}", keys[3], PART_KEYS)))
        return
    schema = SCHEMA[section]
    if keys[1] in schema and (len(keys) == 2 or dict in schema[keys[1]][0]):
        return
    if len(keys) == 3 and keys[1] in schema and dict not in schema[keys[1]][0]:
        # {unifrm = [60, 90]} under a plain key: a misspelt distribution, not a deeper key
        raise XrmInputError(f"{where}: parameters.{section}.{keys[1]}: "
                            + str(unknown("distribution", keys[2], DIST_KINDS)))
    node: Any = given
    for k in keys[1:]:
        if not isinstance(node, Mapping) or k not in node:
            raise XrmInputError(f"{where}: " + str(unknown("parameter", path, _known_paths(scenario))))
        node = node[k]


def _known_paths(scenario: Mapping[str, Any]) -> list[str]:
    out = list(SCHEMA[""])
    for s in SECTIONS:
        out += [f"{s}.{k}" for k in SCHEMA[s]]
        for k in scenario.get(s, {}) if isinstance(scenario.get(s), Mapping) else ():
            if k not in SCHEMA[s] and k != "parts":
                out.append(f"{s}.{k}")
    for j, p in enumerate(scenario.get("phantom", {}).get("parts", []) or []):
        if isinstance(p, Mapping):
            out += [f"phantom.parts.{p.get('name', j)}.{k}" for k in p if k in PART_KEYS]
    return out


def _check_store(store: Any, origin: str) -> dict:
    if not isinstance(store, Mapping):
        raise XrmInputError(f"{origin}: [store] must be a table")
    for k in store:
        if k not in STORE_KEYS:
            raise XrmInputError(f"{origin}: " + str(unknown("key in [store]", k, STORE_KEYS)))
    out: dict[str, Any] = {}
    for k in ("projections", "recon", "labels", "defects"):
        v = store.get(k, True)
        if not isinstance(v, bool):
            raise XrmInputError(f"{origin}: store.{k} = {v!r}: expected true/false")
        out[k] = v
    comp = store.get("compression", 1)
    if isinstance(comp, bool) or not isinstance(comp, int) or not 0 <= comp <= 9:
        raise XrmInputError(f"{origin}: store.compression = {comp!r}: expected a gzip level 0-9 (0 = none)")
    out["compression"] = comp
    fmt = store.get("format", "hdf5")
    if fmt not in SHARD_FORMATS:
        raise XrmInputError(f"{origin}: " + str(unknown("store.format", fmt, SHARD_FORMATS)))
    if fmt == "zarr":
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise XrmInputError(f"{origin}: store.format = \"zarr\" needs the zarr package "
                                "(pip install 'xrm-twin[zarr]')") from None
    if fmt != "hdf5":  # absent means HDF5: specs written before Zarr keep their hash
        out["format"] = fmt
    patches = store.get("patches", False)
    if patches is False or patches is None:
        out["patches"] = None
    else:
        if not isinstance(patches, Mapping):
            raise XrmInputError(f"{origin}: store.patches must be {{size = [pz, py, px], count = n}} or false")
        for k in patches:
            if k not in ("size", "count"):
                raise XrmInputError(f"{origin}: " + str(unknown("key in store.patches", k, ("size", "count"))))
        size = patches.get("size")
        if isinstance(size, int) and not isinstance(size, bool):
            size = [size] * 3
        if (not isinstance(size, list) or len(size) != 3
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
            raise XrmInputError(f"{origin}: store.patches.size = {patches.get('size')!r}: expected "
                                "[pz, py, px] positive integers (voxels)")
        n = patches.get("count", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise XrmInputError(f"{origin}: store.patches.count = {n!r}: expected an integer >= 1")
        out["patches"] = {"size": [int(s) for s in size], "count": int(n)}
    if not any(out[k] for k in ("projections", "recon", "labels", "defects")) and out["patches"] is None:
        raise XrmInputError(f"{origin}: [store] stores nothing")
    return out


def _check_split(split: Any, origin: str) -> dict:
    if not isinstance(split, Mapping):
        raise XrmInputError(f"{origin}: [split] must be a table of fractions")
    for k in split:
        if k not in SPLITS:
            raise XrmInputError(f"{origin}: " + str(unknown("split", k, SPLITS)))
    out = {k: _num(f"{origin}: split.{k}", split.get(k, 0.0)) for k in SPLITS}
    if min(out.values()) < 0:
        raise XrmInputError(f"{origin}: split fractions must be >= 0, got {dict(split)}")
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise XrmInputError(f"{origin}: split fractions must add up to 1, got {dict(split)} "
                            f"(sum {sum(out.values()):g})")
    return out


def _check_voids(voids: Any, bases: list[tuple[str, dict]], origin: str) -> dict | None:
    if voids is None:
        return None
    if not isinstance(voids, Mapping):
        raise XrmInputError(f"{origin}: [voids] must be a table")
    for k in voids:
        if k not in VOID_KEYS:
            raise XrmInputError(f"{origin}: " + str(unknown("key in [voids]", k, VOID_KEYS)))
    host = voids.get("host")
    if not isinstance(host, str):
        raise XrmInputError(f"{origin}: voids.host must name a part (its `name`)")
    for label, sc in bases:
        ph = sc.get("phantom", {})
        if ph.get("kind") != "parts":
            raise XrmInputError(f"{origin}: [voids] needs kind = \"parts\" base scenarios; {label} is "
                                f"{ph.get('kind')!r} (battery phantoms place their own defects)")
        parts = ph.get("parts", [])
        i = _part_index(parts, host)
        if i is None:
            names = [str(p.get("name", j)) for j, p in enumerate(parts) if isinstance(p, Mapping)]
            raise XrmInputError(f"{origin}: voids.host: " + str(unknown("part", host, names)))
        shape = parts[i].get("shape", "mesh")
        if shape not in ("box", "cylinder", "sphere"):
            raise XrmInputError(f"{origin}: voids.host {host!r} is a {shape}; voids go in a box, "
                                "cylinder or sphere")
    out = {"host": host}
    out["count"] = parse_distribution("voids.count", voids.get("count", 1), origin).canonical()
    if out["count"]["kind"] not in ("integers", "value", "choices") or (
            out["count"]["kind"] == "value" and (not isinstance(out["count"]["args"], int)
                                                 or out["count"]["args"] < 0)):
        raise XrmInputError(f"{origin}: voids.count must be an integer >= 0 or "
                            "{{integers = [min, max]}}")
    if out["count"]["kind"] == "integers" and out["count"]["args"][0] < 0:
        raise XrmInputError(f"{origin}: voids.count: min must be >= 0")
    r = parse_distribution("voids.radius_mm", voids.get("radius_mm", 0.05), origin).canonical()
    if r["kind"] == "value":
        _num(f"{origin}: voids.radius_mm", r["args"])
        if r["args"] <= 0:
            raise XrmInputError(f"{origin}: voids.radius_mm must be > 0")
    elif r["kind"] in ("uniform", "loguniform", "normal"):
        lo = r["args"][0] if r["kind"] != "normal" else r["lo"]
        if lo is None or lo <= 0:
            raise XrmInputError(f"{origin}: voids.radius_mm must be > 0 (give min > 0 for a normal)")
    else:
        raise XrmInputError(f"{origin}: voids.radius_mm must be a number or a uniform, loguniform "
                            "or normal distribution")
    out["radius_mm"] = r
    out["material"] = str(voids.get("material", "Air"))
    out["density_g_cm3"] = voids.get("density_g_cm3")
    out["margin_mm"] = _num(f"{origin}: voids.margin_mm", voids.get("margin_mm", 0.0))
    sub = voids.get("subdivisions", 3)
    if isinstance(sub, bool) or not isinstance(sub, int) or not 1 <= sub <= 6:
        raise XrmInputError(f"{origin}: voids.subdivisions must be 1-6, got {sub!r}")
    out["subdivisions"] = sub
    tries = voids.get("max_tries", 200)
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
        raise XrmInputError(f"{origin}: voids.max_tries must be an integer >= 1")
    out["max_tries"] = tries
    return out


def validate_dataset_spec(data: Mapping[str, Any], *, origin: str = "<memory>",
                          base_dir: str | Path = ".") -> DatasetSpec:
    """Validate a raw dataset spec dict (see the module docstring)."""
    if not isinstance(data, Mapping):
        raise XrmInputError(f"{origin}: a dataset spec must be a TOML table")
    for k in data:
        if k not in TOP_KEYS:
            raise XrmInputError(f"{origin}: " + str(unknown("dataset spec key", k, TOP_KEYS)))
    base_dir = Path(base_dir)
    name = data.get("name", "dataset")
    if not isinstance(name, str) or not name:
        raise XrmInputError(f"{origin}: name must be a non-empty string")
    desc = data.get("description", "")
    if "count" not in data:
        raise XrmInputError(f"{origin}: count (number of samples) is required")
    count = data["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise XrmInputError(f"{origin}: count = {count!r}: expected an integer >= 1")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise XrmInputError(f"{origin}: seed = {seed!r}: expected an integer >= 0")
    arch = data.get("arch", "cpu")
    if arch not in ARCHES:
        raise XrmInputError(f"{origin}: " + str(unknown("arch", arch, ARCHES)))
    threads = data.get("threads_per_task", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise XrmInputError(f"{origin}: threads_per_task = {threads!r}: expected an integer >= 1")
    bases = _load_bases(data, origin, base_dir)
    weights = data.get("base_weights")
    if weights is not None:
        if not isinstance(weights, list) or len(weights) != len(bases):
            raise XrmInputError(f"{origin}: base_weights needs {len(bases)} numbers, got {weights!r}")
        weights = tuple(_num(f"{origin}: base_weights", w) for w in weights)
        if min(weights) < 0 or sum(weights) <= 0:
            raise XrmInputError(f"{origin}: base_weights must be >= 0 with a positive sum")
    for label, sc in bases:  # each base must be a valid scenario on its own
        validate(sc, f"{origin} (base {label})")
    params_node = data.get("parameters", {})
    if not isinstance(params_node, Mapping):
        raise XrmInputError(f"{origin}: [parameters] must be a table")
    params = sorted(_flatten_params(params_node, "", origin), key=lambda p: p.path)
    for p in params:
        for label, sc in bases:
            check_param_path(p.path, sc, f"{origin}: parameters.{p.path} (base {label})")
    spec = DatasetSpec(name=name, description=str(desc), count=count, seed=seed,
                       bases=tuple(bases), base_weights=weights, params=tuple(params),
                       voids=_check_voids(data.get("voids"), bases, origin),
                       store=_check_store(data.get("store", {}), origin),
                       split=_check_split(data.get("split", {"train": 0.8, "val": 0.1, "test": 0.1}), origin),
                       arch=arch, threads_per_task=threads, raw=copy.deepcopy(dict(data)), origin=origin)
    # dry run: draw sample 0 and validate its scenario (types of drawn values, nesting keys)
    first = draw_sample(spec, 0)
    check_parameter_limits(spec, first)
    return spec


#: Sections whose values :func:`check_parameter_limits` resolves (the phantom is built per sample).
_RESOLVED_SECTIONS = ("source", "geometry", "detector")


def parameter_limits(p: Param) -> list[Any]:
    """The values a distribution reaches at its limits: the ends of a range (``uniform``,
    ``loguniform``, ``integers``; a ``normal``'s finite bounds), every one of ``choices``."""
    a = p.args
    if p.kind == "value":
        return [a]
    if p.kind in ("uniform", "loguniform", "integers"):
        return [a[0], a[1]]
    if p.kind == "normal":
        return [v for v in (p.lo, p.hi) if v is not None]
    if p.kind == "choices":
        return list(a)
    return []


def check_parameter_limits(spec: DatasetSpec, first: "SampleDraw") -> None:
    """Resolve sample 0's scenario with each source, geometry and detector parameter at each of
    its limits (:func:`parameter_limits`), so that a range reaching outside what the instrument
    allows (``source.kvp = {uniform = [60, 200]}``) or a choice that does not exist (a filter
    ``"LE9"``) is refused when the spec is loaded, naming the parameter, not by every sample
    that happens to draw it after the run has started."""
    from twin.plan import resolve

    for p in spec.params:
        if p.path.split(".")[0] not in _RESOLVED_SECTIONS:
            continue
        for value in parameter_limits(p):
            scenario = copy.deepcopy(first.scenario)
            set_path(scenario, p.path, copy.deepcopy(value))
            try:
                resolve(validate(scenario, spec.origin), with_scene=False)
            except XrmInputError as exc:
                raise XrmInputError(f"{spec.origin}: parameters.{p.path} can be {value!r}, which is "
                                    f"refused: {exc}") from None


# ------------------------------------------------------------------------------- drawing

def _entropy(spec: DatasetSpec) -> int:
    return int(spec.spec_hash[:32], 16)


def stream(spec: DatasetSpec, index: int, *key: int) -> np.random.Generator:
    """The random stream ``key`` of sample ``index`` (independent of any other sample)."""
    return np.random.default_rng(np.random.SeedSequence(_entropy(spec), spawn_key=(int(index),) + key))


def _path_key(path: str) -> int:
    return zlib.crc32(path.encode("utf-8"))


def draw_value(p: Param | Mapping[str, Any], rng: np.random.Generator) -> Any:
    """One draw of a distribution (a :class:`Param` or its canonical dict)."""
    d = p.canonical() if isinstance(p, Param) else p
    kind, a = d["kind"], d["args"]
    if kind == "value":
        return copy.deepcopy(a)
    if kind == "uniform":
        return float(a[0] + (a[1] - a[0]) * rng.random())
    if kind == "loguniform":
        return float(math.exp(math.log(a[0]) + (math.log(a[1]) - math.log(a[0])) * rng.random()))
    if kind == "integers":
        return int(rng.integers(a[0], a[1], endpoint=True))
    if kind == "normal":
        mean, sd = a
        if sd == 0:
            return float(mean)
        from scipy.special import ndtri

        lo = -math.inf if d["lo"] is None else d["lo"]
        hi = math.inf if d["hi"] is None else d["hi"]
        plo, phi = _phi((lo - mean) / sd), _phi((hi - mean) / sd)
        u = plo + (phi - plo) * rng.random()
        x = float(mean + sd * ndtri(min(max(u, 1e-300), 1 - 1e-16)))
        return float(min(max(x, lo), hi))
    if kind == "choices":
        w = d.get("weights")
        prob = None if w is None else np.asarray(w, float) / float(np.sum(w))
        return copy.deepcopy(a[int(rng.choice(len(a), p=prob))])
    raise XrmInputError(f"unknown distribution {kind!r}")  # pragma: no cover


def set_path(scenario: dict, path: str, value: Any) -> None:
    """Set ``path`` (``"source.kvp"``, ``"phantom.parts.anode.radius_mm"``) in a raw scenario."""
    keys = path.split(".")
    if len(keys) >= 4 and keys[0] == "phantom" and keys[1] == "parts":
        parts = scenario.setdefault("phantom", {}).setdefault("parts", [])
        i = _part_index(parts, keys[2])
        if i is None:
            raise XrmInputError(f"parameter {path}: no part named {keys[2]!r}")
        node = parts[i]
        keys = keys[3:]
    else:
        node = scenario
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise XrmInputError(f"parameter {path}: {k} is not a table")
        node = nxt
    node[keys[-1]] = value


@dataclass(frozen=True)
class SampleDraw:
    """What sample ``index`` is: its split, drawn parameters and the complete scenario."""

    index: int
    split: str
    base: str
    params: dict
    scenario: dict
    voids: tuple[dict, ...]


def _split_of(spec: DatasetSpec, index: int) -> str:
    u = stream(spec, index, 1).random()
    acc = 0.0
    for name in SPLITS:
        acc += spec.split[name]
        if u < acc:
            return name
    return [s for s in SPLITS if spec.split[s] > 0][-1]


def draw_sample(spec: DatasetSpec, index: int) -> SampleDraw:
    """Draw sample ``index``: base scenario, parameters, voids, seed, split (pure)."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise XrmInputError(f"sample index must be an integer >= 0, got {index!r}")
    index = int(index)
    params: dict[str, Any] = {}
    if len(spec.bases) > 1:
        rng = stream(spec, index, 0, 0)
        w = spec.base_weights
        prob = None if w is None else np.asarray(w, float) / float(np.sum(w))
        b = int(rng.choice(len(spec.bases), p=prob))
        params["base"] = spec.bases[b][0]
    else:
        b = 0
    label, base = spec.bases[b]
    scenario = copy.deepcopy(base)
    scenario["name"] = f"{spec.name}-{index:06d}"
    seed_stream = np.random.SeedSequence(_entropy(spec), spawn_key=(index, 2))
    scenario["seed"] = int(seed_stream.generate_state(1, np.uint32)[0] & 0x7FFFFFFF)
    for p in spec.params:
        value = draw_value(p, stream(spec, index, 0, _path_key(p.path)))
        set_path(scenario, p.path, value)
        params[p.path] = value
    voids: tuple[dict, ...] = ()
    if spec.voids is not None:
        voids = place_voids(spec.voids, scenario, stream(spec, index, 3), index)
        scenario["phantom"]["parts"].extend(voids)
        params["voids.count"] = len(voids)
    params["seed"] = scenario["seed"]
    try:
        validate(scenario, f"{spec.origin} sample {index} (base {label})")
    except XrmInputError as exc:
        raise XrmInputError(f"{exc} [drawn parameters: {json.dumps(params, default=str)}]") from None
    return SampleDraw(index=index, split=_split_of(spec, index), base=label, params=params,
                      scenario=scenario, voids=voids)


# ---------------------------------------------------------------------------------- voids

def part_box_mm(part: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Axis-aligned bounding box of a primitive part, or None (meshes, voxel parts)."""
    shape = part.get("shape", "mesh")
    c = np.asarray(part.get("center_mm", (0.0, 0.0, 0.0)), float)
    if shape == "box":
        h = np.asarray(part["size_mm"], float) / 2
    elif shape == "sphere":
        h = np.full(3, float(part["radius_mm"]))
    elif shape in ("cylinder", "tube"):
        r, hh = float(part["radius_mm"]), float(part["height_mm"]) / 2
        ax = "xyz".index(part.get("axis", "z"))
        h = np.full(3, r)
        h[ax] = hh
    else:
        return None
    return c - h, c + h


def _inside_host(host: Mapping[str, Any], c: np.ndarray, r: float) -> bool:
    """True if the ball (c, r) lies inside the host primitive."""
    shape = host.get("shape")
    hc = np.asarray(host.get("center_mm", (0.0, 0.0, 0.0)), float)
    d = c - hc
    if shape == "box":
        return bool(np.all(np.abs(d) + r <= np.asarray(host["size_mm"], float) / 2))
    if shape == "sphere":
        return float(np.linalg.norm(d)) + r <= float(host["radius_mm"])
    ax = "xyz".index(host.get("axis", "z"))
    radial = float(np.hypot(*np.delete(d, ax)))
    return radial + r <= float(host["radius_mm"]) and abs(d[ax]) + r <= float(host["height_mm"]) / 2


def place_voids(vspec: Mapping[str, Any], scenario: dict, rng: np.random.Generator, index: int
                ) -> tuple[dict, ...]:
    """Random non-overlapping void spheres inside the host part (rejection sampling).

    A void stays clear of every other part whose box meets the host's box, except the
    parts that contain the host, so the parts stay nested or disjoint. Fewer voids than
    drawn are placed when no room is found in ``max_tries``; the count placed is recorded.
    """
    parts = scenario["phantom"]["parts"]
    hi_ = _part_index(parts, vspec["host"])
    host = parts[hi_]
    n = int(draw_value(vspec["count"], rng))
    lo, hi = part_box_mm(host)
    others = []
    for j, p in enumerate(parts):
        if j == hi_:
            continue
        box = part_box_mm(p)
        if box is None:
            continue
        if np.all(box[0] <= lo) and np.all(box[1] >= hi):
            continue  # a container of the host
        others.append(box)
    margin = float(vspec["margin_mm"])
    placed: list[tuple[np.ndarray, float]] = []
    out = []
    for k in range(n):
        for _ in range(int(vspec["max_tries"])):
            r = float(draw_value(vspec["radius_mm"], rng))
            c = lo + (hi - lo) * rng.random(3)
            if r <= 0 or not _inside_host(host, c, r + margin):
                continue
            if any(np.all(c + r + margin > blo) and np.all(c - r - margin < bhi) for blo, bhi in others):
                continue
            if any(np.linalg.norm(c - c2) < r + r2 + margin for c2, r2 in placed):
                continue
            placed.append((c, r))
            part = {"shape": "sphere", "name": f"void{len(out)}", "material": vspec["material"],
                    "center_mm": [float(x) for x in c], "radius_mm": r,
                    "subdivisions": int(vspec["subdivisions"])}
            if vspec.get("density_g_cm3") is not None:
                part["density_g_cm3"] = vspec["density_g_cm3"]
            out.append(part)
            break
    return tuple(out)


# ------------------------------------------------------------------------------ TOML out

def _toml_key(k: str) -> str:
    return k if k and all(ch.isalnum() or ch in "_-" for ch in k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    raise XrmInputError(f"cannot write {type(v).__name__} to TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """A scenario dict as TOML (None values omitted; lists of tables as ``[[...]]``)."""
    lines: list[str] = []

    def table(node: Mapping[str, Any], prefix: str) -> None:
        scalars = [(k, v) for k, v in node.items() if v is not None and not isinstance(v, Mapping)
                   and not (isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v))]
        for k, v in scalars:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in node.items():
            name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
            if isinstance(v, Mapping):
                lines.append("")
                lines.append(f"[{name}]")
                table(v, name)
            elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
                for x in v:
                    lines.append("")
                    lines.append(f"[[{name}]]")
                    table(x, name)

    table(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"
