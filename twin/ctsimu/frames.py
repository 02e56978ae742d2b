"""CTSimU coordinate systems: placement, deviations, stage rotation, per-view vectors.

A CTSimU object (source, detector, stage, sample) is a local frame ``{u, v, w}`` (samples:
``{r, s, t}``) given by its centre and two orthogonal vectors; the third is ``v = w x u``
(``s = t x r``). Deviations are applied in order to the frame's ideal placement, after the
stage has turned to the view's angle (file format 1.x, ``geometry.rst``). Rotations follow
the right-hand rule about the axis; the stage turns by ``+angle`` about its ``w`` for
``direction = "CCW"``.

xrm-twin traces in a *sample frame*; here that is the stage's own frame at each view, so
parts attached to the stage keep fixed coordinates and source and detector move.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from twin.ctsimu.units import has_drifts, number, quantity
from twin.errors import XrmInputError

WORLD_AXES = ("x", "y", "z")
LOCAL_AXES = ("u", "v", "w")
SAMPLE_AXES = ("r", "s", "t")


def rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Right-handed rotation by ``angle_rad`` about ``axis`` (Rodrigues), shape (3, 3)."""
    a = np.asarray(axis, float)
    n = np.linalg.norm(a)
    if n == 0:
        raise XrmInputError("CTSimU deviation: rotation axis has zero length")
    x, y, z = a / n
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) * c + s * k + (1 - c) * np.outer([x, y, z], [x, y, z])


@dataclass(frozen=True)
class Frame:
    """An orthonormal frame in a reference frame (world, or the stage for attached samples).

    Attributes
    ----------
    center : ndarray (3,)
        Origin in reference coordinates, mm.
    basis : ndarray (3, 3)
        Rows are the unit vectors (u, v, w) or (r, s, t) in reference coordinates.
    """

    center: np.ndarray
    basis: np.ndarray

    @staticmethod
    def from_vectors(center: Sequence[float], first: Sequence[float], third: Sequence[float],
                     where: str) -> "Frame":
        u = np.asarray(first, float)
        w = np.asarray(third, float)
        nu, nw = np.linalg.norm(u), np.linalg.norm(w)
        if nu == 0 or nw == 0:
            raise XrmInputError(f"CTSimU {where}: orientation vectors must not be zero")
        u, w = u / nu, w / nw
        if abs(float(u @ w)) > 1e-6:
            raise XrmInputError(f"CTSimU {where}: the two orientation vectors must be orthogonal "
                                f"(u . w = {float(u @ w):.3g})")
        v = np.cross(w, u)
        return Frame(np.asarray(center, float), np.stack([u, v, w]))

    def to_reference(self, p_local: np.ndarray) -> np.ndarray:
        """Points (..., 3) from this frame into reference coordinates."""
        return self.center + np.asarray(p_local) @ self.basis

    def to_local(self, p_ref: np.ndarray) -> np.ndarray:
        """Points (..., 3) from reference coordinates into this frame."""
        return (np.asarray(p_ref) - self.center) @ self.basis.T

    def rotated(self, axis: np.ndarray, angle_rad: float, pivot: np.ndarray) -> "Frame":
        r = rotation_matrix(axis, angle_rad)
        return Frame(pivot + r @ (self.center - pivot), self.basis @ r.T)

    def translated(self, direction: np.ndarray, distance_mm: float) -> "Frame":
        d = np.asarray(direction, float)
        return replace(self, center=self.center + distance_mm * d / np.linalg.norm(d))


def vector_node(node: Mapping[str, Any], names: Sequence[str], where: str, kind: str | None) -> np.ndarray:
    """Read ``{x: {value}, y: ..., z: ...}`` (or u/v/w, r/s/t) as an array (mm for lengths)."""
    if not isinstance(node, Mapping):
        raise XrmInputError(f"CTSimU {where}: expected an object with keys {', '.join(names)}")
    out = []
    for n in names:
        sub = node.get(n)
        if has_drifts(sub):
            raise XrmInputError(f"CTSimU {where}.{n}: drifts are not supported (unsupported key "
                                f"'{where}.{n}.drifts')")
        val = quantity(sub, kind, f"{where}.{n}", 0.0) if kind else number(sub, f"{where}.{n}", 0.0)
        out.append(val)
    return np.array(out, float)


def axis_names(node: Any) -> tuple[str, ...] | None:
    """Which axis set a vector node uses: world, local or sample (None if none fits)."""
    if isinstance(node, str):
        for names in (WORLD_AXES, LOCAL_AXES, SAMPLE_AXES):
            if node in names:
                return names
        return None
    if isinstance(node, Mapping):
        for names in (WORLD_AXES, LOCAL_AXES, SAMPLE_AXES):
            if any(k in node for k in names):
                return names
    return None


@dataclass(frozen=True)
class AxisContext:
    """How to turn x/y/z, u/v/w and r/s/t vectors into the reference frame of ``frame``.

    ``world_to_ref`` maps world coordinates into the reference frame (identity for world
    objects; the stage frame for attached samples); ``local`` is the frame whose axes u/v/w
    name (the object itself, or the stage for samples; ``None`` means the identity
    because the reference frame *is* the stage); ``sample`` names r/s/t (samples only).
    """

    world_to_ref: Frame | None
    local_is_self: bool


def _resolve(node: Any, names: tuple[str, ...], frame: Frame, ctx: AxisContext, where: str,
             point: bool) -> np.ndarray:
    if isinstance(node, str):
        comps = np.eye(3)[names.index(node)]
    else:
        comps = vector_node(node, names, where, "length" if point else None)
    if names == WORLD_AXES:
        if ctx.world_to_ref is None:
            return comps
        if point:
            return ctx.world_to_ref.to_local(comps)
        return ctx.world_to_ref.basis @ comps
    if names == LOCAL_AXES:
        if ctx.local_is_self:
            return frame.to_reference(comps) if point else comps @ frame.basis
        return comps  # the reference frame is the stage frame
    # sample axes r/s/t
    if ctx.local_is_self:  # world objects: the toolbox treats r/s/t as world axes
        return comps if ctx.world_to_ref is None else (
            ctx.world_to_ref.to_local(comps) if point else ctx.world_to_ref.basis @ comps)
    return frame.to_reference(comps) if point else comps @ frame.basis


def apply_deviations(frame: Frame, deviations: Sequence[Mapping[str, Any]] | None, ctx: AxisContext,
                     where: str) -> Frame:
    """Apply a CTSimU ``deviations`` array (translations and rotations, in order)."""
    for i, dev in enumerate(deviations or []):
        w = f"{where}.deviations[{i}]"
        if not isinstance(dev, Mapping):
            raise XrmInputError(f"CTSimU {w}: a deviation must be an object")
        kind = dev.get("type")
        if has_drifts(dev.get("amount")):
            raise XrmInputError(f"CTSimU {w}.amount: drifts are not supported "
                                f"(unsupported key '{w}.amount.drifts')")
        axis_node = dev.get("axis")
        names = axis_names(axis_node)
        if names is None:
            raise XrmInputError(f"CTSimU {w}.axis: expected one of x y z u v w r s t or a vector, "
                                f"got {axis_node!r}")
        axis = _resolve(axis_node, names, frame, ctx, f"{w}.axis", point=False)
        if kind == "translation":
            dist = quantity(dev.get("amount"), "length", f"{w}.amount", 0.0)
            frame = frame.translated(axis, dist)
        elif kind == "rotation":
            ang = quantity(dev.get("amount"), "angle", f"{w}.amount", 0.0)
            pnode = dev.get("pivot")
            if pnode is None:
                pivot = frame.center
            else:
                pnames = axis_names(pnode)
                if pnames is None:
                    raise XrmInputError(f"CTSimU {w}.pivot: expected x/y/z, u/v/w or r/s/t components")
                pivot = _resolve(pnode, pnames, frame, ctx, f"{w}.pivot", point=True)
            frame = frame.rotated(axis, np.deg2rad(ang), pivot)
        else:
            raise XrmInputError(f"CTSimU {w}.type: expected 'translation' or 'rotation', got {kind!r}")
    return frame


def placement(node: Mapping[str, Any], where: str, *, sample: bool = False) -> tuple[Frame, tuple[str, ...]]:
    """Ideal frame of a ``geometry`` object or a sample ``position``; returns (frame, centre axes)."""
    if not isinstance(node, Mapping) or "center" not in node:
        raise XrmInputError(f"CTSimU {where}: needs 'center' and orientation vectors")
    names = axis_names(node["center"])
    if names is None or names == SAMPLE_AXES:
        raise XrmInputError(f"CTSimU {where}.center: expected x/y/z (world) or u/v/w (stage) components")
    if not sample and names != WORLD_AXES:
        raise XrmInputError(f"CTSimU {where}.center: geometry objects are placed in world x/y/z")
    first, third = ("vector_r", "vector_t") if sample else ("vector_u", "vector_w")
    for key in (first, third):
        if key not in node:
            raise XrmInputError(f"CTSimU {where}: missing {key}")
    center = vector_node(node["center"], names, f"{where}.center", "length")
    a = vector_node(node[first], names, f"{where}.{first}", None)
    b = vector_node(node[third], names, f"{where}.{third}", None)
    return Frame.from_vectors(center, a, b, where), names


def stage_frame_at(stage: Frame, deviations, angle_deg: float) -> Frame:
    """The stage frame at a view: turned by ``angle_deg`` about its w, then deviated."""
    turned = stage.rotated(stage.basis[2], np.deg2rad(angle_deg), stage.center)
    return apply_deviations(turned, deviations, AxisContext(None, True), "geometry.stage")


def view_vectors(source: Frame, detector: Frame, stage: Frame, pitch_u_mm: float, pitch_v_mm: float,
                 *, parallel: bool = False) -> np.ndarray:
    """One view's xrm-twin vector (12,) in the stage frame.

    Cone: (source, detector centre, u step, v step); parallel: (unit ray, detector centre,
    u, v). The detector's u is the column direction, v the row direction (top to bottom).
    """
    d = stage.to_local(detector.center)
    u = stage.basis @ detector.basis[0] * pitch_u_mm
    v = stage.basis @ detector.basis[1] * pitch_v_mm
    if parallel:
        w = source.basis[2]
        if w @ (detector.center - source.center) < 0:
            w = -w
        s = stage.basis @ w
    else:
        s = stage.to_local(source.center)
    return np.concatenate([s, d, u, v])
