"""Single-layer LFP/graphite pouch cell, as a laterally finite coupon.

Frame: layers are stacked along z (as in the paper's Fig. 3, where the XY planes are parallel to
the layers), the coupon's centre at the origin (``layers_mm`` gives each layer's z range; the
construction frame, ``self.z``, has z = 0 at the outer face of the bottom laminate); the coupon spans
x, y in [-width/2, width/2] (default 4 mm: the paper's 3.7 mm interior VOI fits; the real pouch
is about 5 x 5 cm, set ``width_mm`` for more lateral material).

Stack from z = 0 (um, defaults): laminate PA6 25 / Al 40 / PP 23, Al foil 20, LFP cathode 100,
glass-fibre separator 200, graphite anode 50, Cu foil 20, laminate PP 23 / Al 40 / PA6 25.
The electrode stack (Al foil to Cu foil) is 390 um, the paper's "average thickness of the
device"; the whole coupon with laminates is 566 um.

Labels::

     0 air             5 cathode (LFP composite)       10 anode_matrix (resolved)
     1 laminate_pa     6 separator (GF + LiPF6, coarse) 11 graphite_particle (resolved)
     2 laminate_al     7 separator_electrolyte (resolved) 12 cu_foil
     3 laminate_pp     8 glass_fibre (resolved)         13 void (air, resolved)
     4 al_foil         9 anode (graphite composite, coarse) 14 crack (air, resolved)

Microstructure (resolved at voxel <= 2/3 of its feature): spherical voids in the cathode
(lognormal diameters, mean ``void_diameter_um``, entirely inside the layer, never overlapping)
with cracks that start at voids (elliptic through-plane discs from the void surface);
graphite particles (hard-core lattice, mean ``particle_diameter_um``) in a porous matrix of
graphite fines, binder and electrolyte; straight glass fibres near the separator plane.
"""

from __future__ import annotations

import numpy as np

from twin.materials import get_material, porous_composite

from phantoms import hashing
from phantoms.base import ObjectLog, Phantom
from phantoms.fibres import capsule_prims, fibre_capsules
from phantoms.grid import GridSpec
from phantoms.kernels import paint_rounded_sheets, paint_slabs
from phantoms.params import fraction, merge_params, positive
from phantoms.particles import lattice_spheres, sphere_prims, sphere_spec
from phantoms.primitives import Box

__all__ = ["PouchCell", "DEFAULTS"]

DEFAULTS = {
    "width_mm": 4.0,
    "laminate_um": [25.0, 40.0, 23.0],
    "al_foil_um": 20.0,
    "cathode_thickness_um": 100.0,
    "separator_thickness_um": 200.0,
    "anode_thickness_um": 50.0,
    "cu_foil_um": 20.0,
    "void_diameter_um": 15.0,
    "void_cv": 0.2,
    "void_fraction": 0.03,
    "crack_probability": 0.5,
    "crack_length_um": 40.0,
    "crack_opening_um": 4.0,
    "particle_diameter_um": 25.0,
    "particle_cv": 0.15,
    "fibre_diameter_um": 6.0,
    "fibre_length_um": 200.0,
    "fibre_fraction": 0.09,
}

NAMES = ("air", "laminate_pa", "laminate_al", "laminate_pp", "al_foil", "cathode", "separator",
         "separator_electrolyte", "glass_fibre", "anode", "anode_matrix", "graphite_particle",
         "cu_foil", "void", "crack")


class PouchCell(Phantom):
    """LFP/graphite pouch coupon; see the module docstring."""

    kind = "pouch_lfp"
    COMPOSITE_OF = {7: 6, 8: 6, 10: 9, 11: 9, 13: 5, 14: 5}

    def __init__(self, params: dict | None = None, seed: int = 0):
        w = "phantom"
        p = merge_params(DEFAULTS, params, w)
        for k, v in p.items():
            if k == "laminate_um":
                if len(v) != 3:
                    from twin.errors import XrmInputError

                    raise XrmInputError("phantom.laminate_um must be [PA6, Al, PP] thicknesses in um")
                for x in v:
                    positive({"x": x}, "x", w + ".laminate_um")
            elif k in ("void_cv", "particle_cv"):
                fraction(p, k, w, hi=0.5)
            elif k in ("void_fraction", "crack_probability", "fibre_fraction"):
                fraction(p, k, w, hi=0.5 if k != "crack_probability" else 1.0)
            else:
                positive(p, k, w)
        self.voids = sphere_spec(p["void_diameter_um"], p["void_cv"],
                                 volume_fraction=max(p["void_fraction"], 1e-6))
        self.particles = sphere_spec(p["particle_diameter_um"], p["particle_cv"])
        lam = p["laminate_um"]
        t = np.cumsum([0, lam[0], lam[1], lam[2], p["al_foil_um"], p["cathode_thickness_um"],
                       p["separator_thickness_um"], p["anode_thickness_um"], p["cu_foil_um"],
                       lam[2], lam[1], lam[0]]) / 1000.0
        self.z = t  # layer boundaries, mm
        hw = p["width_mm"] / 2
        electrolyte = get_material("LiPF6_EC_DMC")
        gsolid = get_material("graphite_solid")
        # matrix porosity so that particles + matrix hold the composite's 65 % solid
        pf = self.particles.volume_fraction()
        solid_matrix = max(0.05, (0.65 - pf) / (1 - pf))
        matrix = porous_composite("graphite_matrix", gsolid, electrolyte, 1 - solid_matrix)
        mats = (get_material("air"), get_material("PA6"), get_material("Al"), get_material("PP"),
                get_material("Al"), get_material("lfp_cathode"),
                get_material("gf_separator_lipf6"), electrolyte, get_material("borosilicate"),
                get_material("graphite_anode"), matrix, get_material("graphite"),
                get_material("Cu"), get_material("air"), get_material("air"))
        super().__init__(p, seed, list(zip(NAMES, mats)), ((-hw, -hw, 0.0), (hw, hw, t[-1])),
                         {"voids": p["void_diameter_um"], "particles": p["particle_diameter_um"],
                          "fibres": p["fibre_diameter_um"]})

    @property
    def layers_mm(self) -> dict[str, tuple[float, float]]:
        """(z_bottom, z_top) of each layer in the sample frame, mm (bottom laminate first)."""
        names = ["laminate_pa", "laminate_al", "laminate_pp", "al_foil", "cathode", "separator",
                 "anode", "cu_foil", "laminate_pp_top", "laminate_al_top", "laminate_pa_top"]
        z = self.z + self.offset_mm[2]
        return {n: (float(z[i]), float(z[i + 1])) for i, n in enumerate(names)}

    @property
    def coarse_voxel_limit_um(self) -> float:
        """Half the thinnest layer (um): see :attr:`Phantom.coarse_voxel_limit_um`."""
        return float(np.min(np.diff(self.z)) * 1000 / 2)

    @property
    def stack_thickness_um(self) -> float:
        """Al foil to Cu foil, um."""
        return float((self.z[8] - self.z[3]) * 1000)

    def _macro_primitives(self, resolved, log: ObjectLog):
        hw = self._params["width_mm"] / 2
        z = self.z
        labs = [1, 2, 3, 4, 5, 7 if resolved["fibres"] else 6, 10 if resolved["particles"] else 9,
                12, 3, 2, 1]
        names = ["laminate_pa", "laminate_al", "laminate_pp", "al_foil", "cathode", "separator",
                 "anode", "cu_foil", "laminate_pp", "laminate_al", "laminate_pa"]
        return [Box(lab, nm, (-hw, -hw, z[i]), (hw, hw, z[i + 1]))
                for i, (lab, nm) in enumerate(zip(labs, names))]

    def _paint_micro(self, labels, inst, grid: GridSpec, resolved, log: ObjectLog):
        p, z, seed = self._params, self.z, self.seed
        lo, hi = grid.box_mm()
        hw = p["width_mm"] / 2
        lo = np.maximum(lo, [-hw, -hw, 0])
        hi = np.minimum(hi, [hw, hw, z[-1]])
        if resolved["voids"]:
            cz = (z[4], z[5])
            vs = lattice_spheres(self.voids, seed, hashing.STREAMS["void"], lo, hi, cz,
                                 inside_z=True)
            inb = np.all((vs["center_mm"] >= -hw) & (vs["center_mm"] <= hw), axis=1) if len(
                vs["d_um"]) else np.zeros(0, bool)
            vs = {k: v[inb] for k, v in vs.items()}
            ids = []
            for c, d, key in zip(vs["center_mm"], vs["d_um"], vs["key"]):
                ids.append(log.add_defect("void", 13, c, d, area_mm2=np.pi * (d / 1000) ** 2,
                                          volume_analytic_mm3=np.pi / 6 * (d / 1000) ** 3,
                                          diameter_um=float(d), key=[int(k) for k in key]))
            paint_rounded_sheets(labels, sphere_prims(vs, grid), hosts=[5], new_label=13,
                                 instances=inst, ids=np.array(ids, np.int32))
            # cracks from voids: through-plane elliptic discs starting at the void surface
            prims, cids = [], []
            st = hashing.STREAMS["crack_pouch"]
            K = vs["key"]
            U = hashing.uniform(seed, st, K[:, 0:1], K[:, 1:2], K[:, 2:3], np.arange(5)[None, :])
            for c, d, key, u in zip(vs["center_mm"], vs["d_um"], K, U):
                if u[0] >= p["crack_probability"]:
                    continue
                psi = 2 * np.pi * u[1]
                length = p["crack_length_um"] * (0.5 + u[2]) / 1000
                height = min(length * (0.5 + 0.5 * u[3]), (z[5] - z[4]))
                r = d / 2000
                along = np.array([np.cos(psi), np.sin(psi), 0.0])
                nrm = np.array([-np.sin(psi), np.cos(psi), 0.0])
                cc = c + along * (r + length / 2 - 0.5 * grid.voxel_mm)
                area = np.pi * length / 2 * height / 2
                w = p["crack_opening_um"] / 1000
                cids.append(log.add_defect("crack", 14, cc, length * 1000, orientation=nrm,
                                           area_mm2=area, volume_analytic_mm3=area * w,
                                           opening_um=w * 1000, height_um=height * 1000,
                                           from_void_key=[int(k) for k in key]))
                v = grid.voxel_mm
                prims.append([*grid.to_index(cc), *nrm, *along, 0, 0, 1, w / 2 / v,
                              length / 2 / v, height / 2 / v])
            if prims:
                paint_slabs(labels, np.array(prims, np.float64), hosts=[5], new_label=14,
                            elliptic=True, instances=inst, ids=np.array(cids, np.int32))
        if resolved["particles"]:
            az = (z[6], z[7])
            ps = lattice_spheres(self.particles, seed, hashing.STREAMS["graphite_particle"], lo,
                                 hi, az)
            ids = log.add_objects("graphite_particle", 11, ps["center_mm"], ps["d_um"],
                                  ps["complete"])
            paint_rounded_sheets(labels, sphere_prims(ps, grid), hosts=[10], new_label=11,
                                 instances=inst, ids=ids)
        if resolved["fibres"]:
            fz = (z[5], z[6])
            fb = fibre_capsules(seed, hashing.STREAMS["gf_fibre_pouch"], lo, hi, fz,
                                diameter_um=p["fibre_diameter_um"],
                                length_um=p["fibre_length_um"], solid_fraction=p["fibre_fraction"])
            paint_rounded_sheets(labels, capsule_prims(fb, grid), hosts=[7], new_label=8)
