"""CR2032 Na-ion coin cell (NaLi0.2Ni0.25Mn0.75O2 cathode, Na metal anode, 2 x GF/A).

Frame: z is the coin axis, the axis through x = y = 0, the coin's centre at the origin (can
bottom at z = -1.6, cap top at z = +1.6 mm; construction frame ``self.z`` from 0 at the can
bottom, ``offset_mm`` converts). Stack from the can bottom (mm, defaults): can 0.25,
cathode disk (Ø12) 0.15, two GF/A separators (Ø16.5) 0.24 each, Na disk (Ø14) 0.30, spacer
(Ø15.8) 0.50, wave (or cone) spring (Ø15.4, strip 0.25) up to the cap (0.25 thick); PP gasket
between cap skirt and can wall; electrolyte (1 M NaClO4 in PC) wetting the lower part.

Seeded defects (knobs): ``misalignment_mm`` (cathode centre offset, direction from the seed;
a table row without voxels of its own), ``short`` (a Na contact of ``short_diameter_mm``
through a hole in both separators, from the anode to the cathode: the short circuit of the
paper's second replica), ``voids`` gas bubbles of ``void_diameter_mm`` in the separators.

Labels::

     0 air      4 spring    8 separator_electrolyte (resolved)  12 cathode_particle (resolved)
     1 can      5 spacer    9 glass_fibre (resolved)            13 electrolyte
     2 cap      6 sodium   10 cathode (composite, coarse)       14 short_contact (Na)
     3 gasket   7 separator (GF/A + NaClO4, coarse)  11 cathode_matrix (resolved)   15 void (gas)
"""

from __future__ import annotations

import numpy as np

from twin.materials import get_material, mixture, porous_composite

from phantoms import hashing
from phantoms.base import ObjectLog, Phantom
from phantoms.fibres import capsule_prims, fibre_capsules
from phantoms.grid import GridSpec
from phantoms.kernels import paint_rounded_sheets
from phantoms.params import choice, fraction, integer, merge_params, positive
from phantoms.particles import lattice_spheres, sphere_prims, sphere_spec
from phantoms.primitives import ConeShell, Cylinder, RadialRod, Sphere, WaveRing

__all__ = ["CoinCell", "DEFAULTS"]

DEFAULTS = {
    "spring": "wave",
    "misalignment_mm": 0.4,
    "short": True,
    "short_diameter_mm": 0.5,
    "voids": 4,
    "void_diameter_mm": 0.18,
    "cathode_diameter_mm": 12.0,
    "cathode_thickness_mm": 0.15,
    "separator_diameter_mm": 16.5,
    "separator_thickness_mm": 0.24,
    "anode_diameter_mm": 14.0,
    "anode_thickness_mm": 0.30,
    "spacer_thickness_mm": 0.50,
    "particle_diameter_um": 8.0,
    "particle_cv": 0.2,
    "fibre_diameter_um": 4.0,
    "fibre_length_um": 150.0,
    "fibre_fraction": 0.09,
    "can_material": "SS304",
}

NAMES = ("air", "can", "cap", "gasket", "spring", "spacer", "sodium", "separator",
         "separator_electrolyte", "glass_fibre", "cathode", "cathode_matrix", "cathode_particle",
         "electrolyte", "short_contact", "void")

D, H = 20.0, 3.2  # CR2032 outer diameter and height, mm
WALL = 0.25


class CoinCell(Phantom):
    """CR2032 Na-ion coin cell; see the module docstring."""

    kind = "coin_na_ion"
    COMPOSITE_OF = {8: 7, 9: 7, 11: 10, 12: 10}

    def __init__(self, params: dict | None = None, seed: int = 0):
        w = "phantom"
        p = merge_params(DEFAULTS, params, w)
        choice(p, "spring", w, ("wave", "cone"))
        choice(p, "can_material", w, ("SS304", "SS316L"))
        if not isinstance(p["short"], bool):
            from twin.errors import XrmInputError

            raise XrmInputError(f"phantom.short must be true or false, got {p['short']!r}")
        integer(p, "voids", w)
        for k in ("misalignment_mm",):
            positive(p, k, w, allow_zero=True)
        for k in ("short_diameter_mm", "void_diameter_mm", "cathode_diameter_mm",
                  "cathode_thickness_mm", "separator_diameter_mm", "separator_thickness_mm",
                  "anode_diameter_mm", "anode_thickness_mm", "spacer_thickness_mm",
                  "particle_diameter_um", "fibre_diameter_um", "fibre_length_um"):
            positive(p, k, w)
        fraction(p, "particle_cv", w, hi=0.5)
        fraction(p, "fibre_fraction", w, hi=0.5)
        z = np.cumsum([WALL, p["cathode_thickness_mm"], p["separator_thickness_mm"],
                       p["separator_thickness_mm"], p["anode_thickness_mm"],
                       p["spacer_thickness_mm"]])
        if z[-1] > H - WALL - 0.3:
            from twin.errors import XrmInputError

            raise XrmInputError(f"the coin stack is {z[-1]:.2f} mm high: no room for the spring "
                                f"under the cap (at most {H - WALL - 0.3:.2f} mm)")
        self.z = np.concatenate([[0.0], z])  # 0, can top, cathode top, sep1, sep2, Na, spacer
        off = p["misalignment_mm"]
        ang = 2 * np.pi * float(hashing.uniform(seed, hashing.STREAMS["coin"], 0))
        self.cathode_xy = (off * np.cos(ang), off * np.sin(ang))
        if off + p["cathode_diameter_mm"] / 2 > D / 2 - 1.5:
            from twin.errors import XrmInputError

            raise XrmInputError("phantom.misalignment_mm moves the cathode into the gasket")
        u = hashing.uniform(seed, hashing.STREAMS["coin"], 1, np.arange(2))
        rs = 0.6 * p["cathode_diameter_mm"] / 2 * np.sqrt(u[0])
        self.short_xy = (rs * np.cos(2 * np.pi * u[1]) + self.cathode_xy[0],
                         rs * np.sin(2 * np.pi * u[1]) + self.cathode_xy[1])
        self.particles = sphere_spec(p["particle_diameter_um"], p["particle_cv"])
        electrolyte = get_material("NaClO4_PC")
        na_solid = get_material("na_cathode_solid")
        pf = self.particles.volume_fraction()
        # the composite holds 55 % solid (porosity 0.45); the matrix keeps the balance
        active = get_material("NaLi0.2Ni0.25Mn0.75O2")
        binder = mixture("na_cathode_binder", [(get_material("PTFE"), 0.10),
                                               (get_material("super_p"), 0.20)])
        solid_matrix = max(0.05, (0.55 - pf) / (1 - pf))
        matrix = porous_composite("na_cathode_matrix", mixture(
            "na_matrix_solid", [(binder, 0.6), (na_solid, 0.4)]), electrolyte, 1 - solid_matrix)
        can = get_material(p["can_material"])
        mats = (get_material("air"), can, can, get_material("PP"), get_material("SS304"),
                get_material("SS316L"), get_material("Na"), get_material("gf_separator_naclo4"),
                electrolyte, get_material("borosilicate"), get_material("na_cathode"), matrix,
                active, electrolyte, get_material("Na"), get_material("air"))
        super().__init__(p, seed, list(zip(NAMES, mats)),
                         ((-D / 2, -D / 2, 0.0), (D / 2, D / 2, H)),
                         {"cathode": p["particle_diameter_um"],
                          "separator": p["fibre_diameter_um"]})

    def _macro_primitives(self, resolved, log: ObjectLog):
        p, z = self._params, self.z
        R = D / 2
        cx, cy = self.cathode_xy
        sep_lab = 8 if resolved["separator"] else 7
        cat_lab = 11 if resolved["cathode"] else 10
        z_sp = z[6]
        z_cap = H - WALL
        prims = [
            Cylinder(13, "electrolyte", 0.0, R - WALL - 0.1, WALL, z[5]),
            Cylinder(1, "can_bottom", 0.0, R, 0.0, WALL),
            Cylinder(1, "can_wall", R - WALL, R, 0.0, H - 0.3),
            Cylinder(3, "gasket", 8.6, R - WALL, 1.6, H - 0.55),
            Cylinder(1, "can_crimp", 9.0, R, H - 0.55, H - 0.3),
            Cylinder(3, "gasket_top", 8.6, 9.0, H - 0.55, H - 0.15),
            Cylinder(2, "cap_top", 0.0, 8.6, z_cap, H),
            Cylinder(2, "cap_skirt", 8.35, 8.6, 1.7, H),
            Cylinder(cat_lab, "cathode", 0.0, p["cathode_diameter_mm"] / 2, z[1], z[2], cx, cy),
            Cylinder(sep_lab, "separator_1", 0.0, p["separator_diameter_mm"] / 2, z[2], z[3]),
            Cylinder(sep_lab, "separator_2", 0.0, p["separator_diameter_mm"] / 2, z[3], z[4]),
            Cylinder(6, "sodium", 0.0, p["anode_diameter_mm"] / 2, z[4], z[5]),
            Cylinder(5, "spacer", 0.0, 7.9, z[5], z_sp),
        ]
        t = 0.25
        if p["spring"] == "wave":
            phase = 2 * np.pi * float(hashing.uniform(self.seed, hashing.STREAMS["coin"], 2))
            prims.append(WaveRing(4, "spring", 6.3, 7.7, (z_sp + z_cap) / 2,
                                  (z_cap - z_sp - t) / 2, t, 3, phase))
        else:
            prims.append(ConeShell(4, "spring", 4.0, z_sp + t / 2, 7.7, z_cap - t / 2, t))
        if p["misalignment_mm"] > 0:
            log.add_defect("misalignment", cat_lab, (cx, cy, (z[1] + z[2]) / 2),
                           p["misalignment_mm"] * 1000,
                           orientation=(np.cos(np.arctan2(cy, cx)), np.sin(np.arctan2(cy, cx)), 0),
                           instance=False, offset_mm=[float(cx), float(cy)])
        if p["short"]:
            rs = p["short_diameter_mm"] / 2
            sx, sy = self.short_xy
            rod = RadialRod(14, "short_contact", (sx, sy, z[2]), (sx, sy, z[4]), rs)
            rod.instance_id = log.add_defect(
                "short", 14, (sx, sy, (z[2] + z[4]) / 2), 2 * rs * 1000,
                area_mm2=np.pi * rs ** 2, volume_analytic_mm3=np.pi * rs ** 2 * (z[4] - z[2]),
                cause="separator hole: Na metal through both separators touches the cathode")
            prims.append(rod)
        n = int(p["voids"])
        if n:
            u = hashing.uniform(self.seed, hashing.STREAMS["coin"], 3, np.arange(n)[:, None],
                                np.arange(4)[None, :])
            rv = p["void_diameter_mm"] / 2
            for i in range(n):
                rr = (p["separator_diameter_mm"] / 2 - rv - 0.2) * np.sqrt(u[i, 0])
                c = (rr * np.cos(2 * np.pi * u[i, 1]), rr * np.sin(2 * np.pi * u[i, 1]),
                     z[2] + rv + (z[4] - z[2] - 2 * rv) * u[i, 2])
                s = Sphere(15, f"void_{i}", c, rv)
                s.instance_id = log.add_defect(
                    "void", 15, c, 2 * rv * 1000, area_mm2=4 * np.pi * rv ** 2,
                    volume_analytic_mm3=4 / 3 * np.pi * rv ** 3, where="separator (gas bubble)")
                prims.append(s)
        return prims

    @property
    def coarse_voxel_limit_um(self) -> float:
        """Half the thinnest layer of the stack (can wall, electrodes, separators, spacer), um:
        see :attr:`Phantom.coarse_voxel_limit_um`."""
        return float(np.min(np.diff(self.z)) * 1000 / 2)

    def _paint_micro(self, labels, inst, grid: GridSpec, resolved, log: ObjectLog):
        p, z, seed = self._params, self.z, self.seed
        lo, hi = grid.box_mm()
        if resolved["cathode"]:
            ps = lattice_spheres(self.particles, seed, hashing.STREAMS["cathode_particle"], lo, hi,
                                 (z[1], z[2]))
            r = np.hypot(ps["center_mm"][:, 0] - self.cathode_xy[0],
                         ps["center_mm"][:, 1] - self.cathode_xy[1])
            keep = r <= p["cathode_diameter_mm"] / 2
            ps = {k: v[keep] for k, v in ps.items()}
            ids = log.add_objects("cathode_particle", 12, ps["center_mm"], ps["d_um"],
                                  ps["complete"])
            paint_rounded_sheets(labels, sphere_prims(ps, grid), hosts=[11], new_label=12,
                                 instances=inst, ids=ids)
        if resolved["separator"]:
            fb = fibre_capsules(seed, hashing.STREAMS["gf_fibre_coin"], lo, hi, (z[2], z[4]),
                                diameter_um=p["fibre_diameter_um"],
                                length_um=p["fibre_length_um"], solid_fraction=p["fibre_fraction"])
            paint_rounded_sheets(labels, capsule_prims(fb, grid), hosts=[8], new_label=9)
