"""AAA NiMH cell (HR03, VARTA class): spiral-wound Ni(OH)2 / AB5 cell in a Ni-plated steel can.

Frame: z is the cell axis, x, y across; the sample frame has the cell's centre at the origin
(negative can bottom at z = -22.25 mm, positive terminal top at z = +22.25 mm). Internally the
cell is built with the bottom at z = 0 (``offset_mm`` converts). Numbers: ``shared/reference/battery_instrument.md``
section 2 (estimates where marked E there).

Labels (same for every grid)::

     0 air                 8 negative_foil (Ni)
     1 can (steel)         9 separator (PP non-woven + KOH)
     2 cap (steel)        10 positive_electrode (composite: paste + Ni foam, coarse grids)
     3 vent_valve (EPDM)  11 positive_paste (Ni(OH)2 + KOH, resolved grids)
     4 gasket (PA6)       12 ni_foam (Ni, resolved grids)
     5 insulator (PP)     13 electrolyte (free KOH)
     6 tab (Ni)           14 delamination (KOH-filled gap, resolved grids)
     7 negative_active (AB5 + KOH)   15 crack (KOH-filled, resolved grids)

The positive electrode, foam, cracks and delamination are resolved when the voxel is at most
2/3 of the foam's mean local thickness (24 um for the paper's foam); coarser grids carry the
homogenised ``positive_electrode`` composite (paste and foam mixed by the foam's expected solid
fraction) and no ageing damage.
"""

from __future__ import annotations

import numpy as np

from twin.materials import Material, formula_mass_fractions, get_material, mixture

from phantoms import ageing, foam
from phantoms.base import ObjectLog, Phantom
from phantoms.grid import GridSpec
from phantoms.kernels import paint_rounded_sheets, paint_slabs
from phantoms.params import merge_params, positive
from phantoms.primitives import Cylinder, Box, Primitive, RadialRod
from phantoms.spiral import Spiral

__all__ = ["NiMHCell", "DEFAULTS"]

DEFAULTS = {
    "cycles": 0,
    "foam": dict(foam.FOAM_DEFAULTS),
    "diameter_mm": 10.5,
    "length_mm": 44.5,
    "can_wall_mm": 0.25,
    "core_radius_mm": 0.65,
    "negative_thickness_mm": 0.30,
    "foil_thickness_um": 30.0,
    "positive_thickness_mm": 0.60,
    "separator_thickness_mm": 0.10,
    "ageing": dict(ageing.AGEING_DEFAULTS),
}

NAMES = ("air", "can", "cap", "vent_valve", "gasket", "insulator", "tab", "negative_active",
         "negative_foil", "separator", "positive_electrode", "positive_paste", "ni_foam",
         "electrolyte", "delamination", "crack")


class _Winding(Primitive):
    """The spiral as a primitive: a 2-D label map extruded along z."""

    def __init__(self, spiral: Spiral):
        self.spiral = spiral
        self.label = 0
        self.name = "winding"
        self._cache: dict = {}

    def bbox_mm(self):
        r = self.spiral.r_max_mm
        return np.array([-r, -r, self.spiral.z0_mm]), np.array([r, r, self.spiral.z1_mm])

    def paint(self, sub, X, Y, Z):
        key = (X.shape, float(X.ravel()[0]), Y.shape, float(Y.ravel()[0]))
        if key not in self._cache:
            self._cache = {key: self.spiral.label_map(X[0], Y[0])}
        m2 = self._cache[key]
        zin = ((Z >= self.spiral.z0_mm) & (Z < self.spiral.z1_mm)).ravel()
        sel = m2 != 0
        for kz in np.nonzero(zin)[0]:
            sub[kz][sel] = m2[sel]

    def mask(self, X, Y, Z):
        m2 = self.spiral.label_map(X[0], Y[0]) != 0
        return m2[None] & ((Z >= self.spiral.z0_mm) & (Z < self.spiral.z1_mm))

    def meshes(self):
        return self.spiral.layer_meshes()


class NiMHCell(Phantom):
    """AAA NiMH cell; see the module docstring.

    Parameters
    ----------
    params : dict
        Keys of :data:`DEFAULTS` (``cycles``, ``foam`` = ``[phantom.foam]``, geometry, and
        ``ageing`` growth constants).
    seed : int
    """

    kind = "nimh_aaa"
    COMPOSITE_OF = {11: 10, 12: 10, 15: 10, 14: 7}

    def defect_kinds(self) -> frozenset[str]:
        """Cracks and delamination once ``cycles`` passes the earliest onset of each
        (:mod:`phantoms.ageing`); an unaged cell holds none."""
        kinds = set()
        if self.cycles > float(self.age["crack_onset_cycles"][0]):
            kinds.add("crack")
        if self.cycles > float(self.age["delamination_onset_cycles"][0]):
            kinds.add("delamination")
        return frozenset(kinds)

    def __init__(self, params: dict | None = None, seed: int = 0):
        w = "phantom"
        p = merge_params(DEFAULTS, params, w)
        p["foam"] = dict(p["foam"] or {})
        self.foam = foam.foam_spec(p["foam"])
        self.cycles = positive(p, "cycles", w, allow_zero=True)
        for k in ("diameter_mm", "length_mm", "can_wall_mm", "core_radius_mm",
                  "negative_thickness_mm", "foil_thickness_um", "positive_thickness_mm",
                  "separator_thickness_mm"):
            positive(p, k, w)
        self.age = p["ageing"]
        for k, v in self.age.items():
            if isinstance(v, list):
                if len(v) != 2 or not 0 < v[0] <= v[1]:
                    from twin.errors import XrmInputError

                    raise XrmInputError(f"phantom.ageing.{k} must be [first, last] cycles with "
                                        f"0 < first <= last, got {v!r}")
            else:
                positive(self.age, k, w + ".ageing")
        R = p["diameter_mm"] / 2
        L = p["length_mm"]
        neg, pos, sep = p["negative_thickness_mm"], p["positive_thickness_mm"], p["separator_thickness_mm"]
        foil = p["foil_thickness_um"] / 1000
        if foil >= neg:
            from twin.errors import XrmInputError

            raise XrmInputError("phantom.foil_thickness_um must be below negative_thickness_mm")
        pitch = neg + sep + pos + sep
        r_in_can = R - p["can_wall_mm"]
        r_wind = r_in_can - 0.05
        r0 = p["core_radius_mm"]
        theta_end = 2 * np.pi * (r_wind - r0 - pitch) / pitch
        if theta_end < 2 * np.pi:
            from twin.errors import XrmInputError

            raise XrmInputError(f"the winding does not fit: core {r0} mm, pitch {pitch:.3f} mm, "
                                f"can inner radius {r_in_can:.3f} mm (less than one turn)")
        self.geometry = dict(R=R, L=L, r_in_can=r_in_can, pitch=pitch, r0=r0,
                             theta_end=theta_end, z_w0=0.6, z_w1=L - 3.3,
                             t_foil=((neg - foil) / 2, (neg + foil) / 2),
                             t_pos=(neg + sep, neg + sep + pos))
        self.spiral_layers = lambda resolved_pos: (
            (0.0, (neg - foil) / 2, 7), ((neg - foil) / 2, (neg + foil) / 2, 8),
            ((neg + foil) / 2, neg, 7), (neg, neg + sep, 9),
            (neg + sep, neg + sep + pos, 11 if resolved_pos else 10),
            (neg + sep + pos, pitch, 9))
        steel = get_material("low_carbon_steel")
        ni = get_material("Ni")
        paste = get_material("nimh_positive")
        phi = self.foam.solid_fraction
        pos_comp = mixture("nimh_positive_foam", [(paste, (1 - phi) * paste.density_g_cm3),
                                                  (ni, phi * ni.density_g_cm3)])
        epdm = Material("EPDM", formula_mass_fractions("C5H8"), 0.92, "EPDM rubber (C5H8)n")
        kOH = get_material("KOH_30wt")
        mats = (get_material("air"), steel, steel, epdm, get_material("PA6"), get_material("PP"),
                ni, get_material("nimh_negative"), ni, get_material("nimh_separator"), pos_comp,
                paste, ni, kOH, kOH, kOH)
        super().__init__(p, seed, list(zip(NAMES, mats)),
                         ((-R, -R, 0.0), (R, R, L)),
                         {"positive": self.foam.thickness_mean_um})

    # --------------------------------------------------------------- macro
    def _macro_primitives(self, resolved, log: ObjectLog):
        g = self.geometry
        R, L, ri = g["R"], g["L"], g["r_in_can"]
        sp = Spiral(g["r0"], g["pitch"], g["theta_end"], g["z_w0"], g["z_w1"],
                    self.spiral_layers(resolved["positive"]))
        # tab: Ni strip on the outer turn's positive layer at phi = 0, up to the cap plate
        k_last = int(g["theta_end"] // (2 * np.pi))
        r_tab = sp.radius_at(2 * np.pi * k_last, sum(g["t_pos"]) / 2)
        cap_lo = L - 1.9
        return [
            Cylinder(13, "electrolyte", 0.0, ri, 0.25, g["z_w1"]),
            Cylinder(1, "can", ri, R, 0.0, L - 0.8),
            Cylinder(1, "can_bottom", 0.0, R, 0.0, 0.25),
            Cylinder(5, "insulator_bottom", 0.0, ri, 0.25, 0.45),
            Cylinder(0, "core", 0.0, g["r0"], 0.45, g["z_w1"]),
            _Winding(sp),
            Cylinder(5, "insulator_top", 0.0, ri - 0.1, g["z_w1"] + 0.1, g["z_w1"] + 0.4),
            Box(6, "tab", (r_tab - 0.05, -1.0, g["z_w1"] - 4.0), (r_tab + 0.05, 1.0, cap_lo)),
            Cylinder(4, "gasket", ri - 0.6, ri, cap_lo - 0.3, L - 1.05),
            Cylinder(1, "can_crimp", ri - 0.7, R, L - 1.05, L - 0.8),
            Cylinder(2, "cap_plate", 0.0, ri - 0.4, cap_lo, cap_lo + 0.3),
            Cylinder(0, "exhaust_hole", 0.0, 0.45, cap_lo, cap_lo + 0.3),
            Cylinder(2, "terminal_wall", 1.65, 1.9, cap_lo + 0.3, L),
            Cylinder(2, "terminal_top", 0.0, 1.9, L - 0.25, L),
            Cylinder(3, "vent_valve", 0.0, 1.6, cap_lo + 0.3, cap_lo + 1.2),
            RadialRod(0, "vent_port_x", (1.4, 0.0, cap_lo + 1.35), (2.0, 0.0, cap_lo + 1.35), 0.25),
            RadialRod(0, "vent_port_-x", (-1.4, 0.0, cap_lo + 1.35), (-2.0, 0.0, cap_lo + 1.35), 0.25),
        ]

    # --------------------------------------------------------------- microstructure + ageing
    def spiral(self) -> Spiral:
        """The winding with resolved labels (radii in mm; z in the construction frame)."""
        g = self.geometry
        return Spiral(g["r0"], g["pitch"], g["theta_end"], g["z_w0"], g["z_w1"],
                      self.spiral_layers(True))

    def damage(self, cycles: float | None = None) -> dict[str, dict]:
        """Analytic crack and delamination sites of the whole cell at ``cycles``.

        Returns ``{"crack": {...}, "delamination": {...}}`` of arrays (one entry per site that
        has initiated): ``theta`` unrolled winding angle (rad; the site is at polar angle
        ``theta mod 2 pi`` on the turn ``theta // 2 pi``), ``z_mm`` (sample frame), growth
        state ``s``, ``onset`` cycles and the sizes (see :mod:`phantoms.ageing`).
        """
        d = self._damage_local(cycles)
        for v in d.values():
            v["z_mm"] = v["z_mm"] + self.offset_mm[2]
        return d

    def _damage_local(self, cycles: float | None = None) -> dict[str, dict]:
        c = self.cycles if cycles is None else float(cycles)
        g = self.geometry
        return {"crack": ageing.crack_sites(self.seed, self.age, g["theta_end"], g["z_w0"],
                                            g["z_w1"], c),
                "delamination": ageing.delamination_sites(self.seed, self.age, g["theta_end"],
                                                          g["z_w0"], g["z_w1"], c)}

    def _paint_micro(self, labels, inst, grid: GridSpec, resolved, log: ObjectLog):
        if not resolved["positive"]:
            return
        lo, hi = grid.box_mm()
        sp = self.spiral()
        g = self.geometry
        dmg = self._damage_local()
        self._paint_cracks(labels, inst, grid, sp, dmg["crack"], log, lo, hi)
        self._paint_delamination(labels, inst, grid, sp, dmg["delamination"], log, lo, hi)
        # Ni foam, only inside the positive paste (and across cracks: struts bridge them)
        if lo[2] < g["z_w1"] and hi[2] > g["z_w0"]:
            st = foam.foam_struts(self.foam, lo, hi, self.seed)
            paint_rounded_sheets(labels, foam.strut_prims(st, grid, self.foam.bead_spacing),
                                 hosts=[11, 15], new_label=12)

    def _paint_cracks(self, labels, inst, grid, sp, cr, log, lo, hi):
        g = self.geometry
        tp0, tp1 = g["t_pos"]
        T = tp1 - tp0
        prims, ids = [], []
        for n in range(len(cr["s"])):
            th, zc = cr["theta"][n], cr["z_mm"][n]
            depth = T * cr["depth_frac"][n]
            h = cr["height_mm"][n]
            w = cr["opening_um"][n] / 1000
            phi = th % (2 * np.pi)
            r_c = sp.radius_at(th, tp0 + depth / 2)  # grows from the foil-side face outwards
            c = np.array([r_c * np.cos(phi), r_c * np.sin(phi), zc])
            ext = np.array([depth, depth, h]) / 2 + w
            if np.any(c + ext < lo) or np.any(c - ext > hi):
                continue
            nrm = np.array([-np.sin(phi), np.cos(phi), 0.0])
            u = np.array([np.cos(phi), np.sin(phi), 0.0])
            area = np.pi * depth / 2 * h / 2
            did = log.add_defect("crack", 15, c, max(depth, h) * 1000, orientation=nrm,
                                 area_mm2=area, volume_analytic_mm3=area * w,
                                 opening_um=w * 1000, depth_um=depth * 1000, height_um=h * 1000,
                                 onset_cycles=float(cr["onset"][n]), cycles=self.cycles,
                                 site=[int(x) for x in cr["key"][n]])
            ci = grid.to_index(c)
            v = grid.voxel_mm
            prims.append([*ci, *nrm, *u, 0, 0, 1, w / 2 / v, depth / 2 / v, h / 2 / v])
            ids.append(did)
        if prims:
            paint_slabs(labels, np.array(prims, np.float64), hosts=[11], new_label=15,
                        elliptic=True, instances=inst, ids=np.array(ids, np.int32))

    def _paint_delamination(self, labels, inst, grid, sp, dl, log, lo, hi):
        g = self.geometry
        f0, f1 = g["t_foil"]
        xs, ys, zs = grid.axis_mm("x"), grid.axis_mm("y"), grid.axis_mm("z")
        for n in range(len(dl["s"])):
            th, zc = dl["theta"][n], dl["z_mm"][n]
            a, b, gap = dl["half_arc_rad"][n], dl["half_height_mm"][n], dl["gap_um"][n] / 1000
            side = dl["side"][n]
            t_lo, t_hi = (f1, f1 + gap) if side > 0 else (f0 - gap, f0)
            ths = np.linspace(th - a, th + a, 64)
            rr = sp.r0_mm + sp.pitch_mm * ths / (2 * np.pi)
            px = np.concatenate([(rr + t_lo) * np.cos(ths), (rr + t_hi) * np.cos(ths)])
            py = np.concatenate([(rr + t_lo) * np.sin(ths), (rr + t_hi) * np.sin(ths)])
            blo = np.array([px.min(), py.min(), zc - b]) - 2 * grid.voxel_mm
            bhi = np.array([px.max(), py.max(), zc + b]) + 2 * grid.voxel_mm
            rmid = sp.radius_at(th, (t_lo + t_hi) / 2)
            c = np.array([rmid * np.cos(th), rmid * np.sin(th), zc])
            area = np.pi * (rmid * a) * b
            if np.any(bhi < lo) or np.any(blo > hi):
                continue
            did = log.add_defect("delamination", 14, c, 2 * max(rmid * a, b) * 1000,
                                 orientation=(np.cos(th), np.sin(th), 0.0), area_mm2=area,
                                 volume_analytic_mm3=area * gap, gap_um=gap * 1000,
                                 onset_cycles=float(dl["onset"][n]), cycles=self.cycles,
                                 side=int(side), site=[int(x) for x in dl["key"][n]])
            rng = grid.index_range(blo, bhi)
            if rng is None:
                continue
            zsl, ysl, xsl = rng
            X, Y = xs[xsl][None, :], ys[ysl][:, None]
            theta, t, valid = sp.coords(X, Y)
            m2 = valid & (t >= t_lo) & (t < t_hi) & (np.abs(theta - th) <= a)
            if not m2.any():
                continue
            rel = np.where(m2, (theta - th) / max(a, 1e-12), 2.0)
            half_z = b * np.sqrt(np.clip(1 - rel ** 2, 0, None))  # elliptic patch in (arc, z)
            Z = zs[zsl][:, None, None]
            m3 = m2[None] & (np.abs(Z - zc) <= half_z[None])
            sub = labels[zsl, ysl, xsl]
            m3 &= sub == 7
            sub[m3] = 14
            if inst is not None:
                isub = inst[zsl, ysl, xsl]
                isub[m3] = np.maximum(isub[m3], did)
