"""Materials: elemental composition, density and linear attenuation from xraydb.

One place for attenuation: :func:`Material.mu_per_mm` evaluates
``mu(E) = rho * sum_i w_i (mu/rho)_i(E)`` with the Elam et al. tables shipped by xraydb
(total cross-section, coherent scattering included, as is right for narrow-beam transmission).

Named materials carry the numbers of ``shared/reference/battery_instrument.md`` (section 3);
composites (electrodes) are porosity-weighted mixtures of a solid skeleton and an electrolyte.
Their compositions are estimates where the sheet says so, documented in ``docs/materials.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from twin.errors import XrmInputError, close_matches

__all__ = [
    "Material",
    "get_material",
    "mixture",
    "porous_composite",
    "named_materials",
    "formula_mass_fractions",
    "resolved_lookups",
    "preload_lookups",
    "allowed_materials",
    "MATERIALS_DOC",
]


def _xraydb():
    """xraydb, imported on first use (a resolved plan runs without it, e.g. on a GPU node)."""
    import xraydb

    return xraydb


#: Every answer of :func:`get_material` (by (name, density)) and :func:`formula_mass_fractions`
#: (by formula) in this process. A plan file whose phantom is rebuilt on the worker carries
#: them, so the worker needs no xraydb (:func:`resolved_lookups`, :func:`preload_lookups`).
_RESOLVED: dict[tuple[str, float | None], Any] = {}
_FORMULAS: dict[str, tuple[tuple[str, float], ...]] = {}


@lru_cache(maxsize=4096)
def _mass_attenuation_cm2_g(element: str, energies_ev: tuple[float, ...]) -> np.ndarray:
    return np.asarray(_xraydb().mu_elam(element, np.asarray(energies_ev), kind="total"), float)


@dataclass(frozen=True)
class Material:
    """A homogeneous material.

    Parameters
    ----------
    name : str
        Name used in scenarios and in ``truth.h5``.
    mass_fractions : tuple of (str, float)
        Element symbol and mass fraction; fractions sum to 1.
    density_g_cm3 : float
        Bulk density in g/cm^3.
    formula : str, optional
        Chemical formula or a short description of the composition (for ``truth.h5``).
    """

    name: str
    mass_fractions: tuple[tuple[str, float], ...]
    density_g_cm3: float
    formula: str | None = None

    def mass_attenuation_cm2_g(self, energy_kev: np.ndarray | float) -> np.ndarray:
        """Mass attenuation coefficient mu/rho in cm^2/g at ``energy_kev`` (any shape)."""
        e = np.atleast_1d(np.asarray(energy_kev, dtype=float))
        key = tuple((e.ravel() * 1000.0).tolist())
        total = np.zeros(e.size)
        for element, w in self.mass_fractions:
            total += w * _mass_attenuation_cm2_g(element, key)
        return total.reshape(e.shape)

    def mu_per_mm(self, energy_kev: np.ndarray | float) -> np.ndarray:
        """Linear attenuation coefficient in 1/mm at ``energy_kev`` (any shape)."""
        return self.mass_attenuation_cm2_g(energy_kev) * self.density_g_cm3 / 10.0

    def with_density(self, density_g_cm3: float) -> "Material":
        """The same composition at another density."""
        if not np.isfinite(density_g_cm3) or density_g_cm3 <= 0:
            raise XrmInputError(f"density_g_cm3 of {self.name!r} must be > 0, got {density_g_cm3!r}")
        return Material(self.name, self.mass_fractions, float(density_g_cm3), self.formula)

    def describe(self) -> str:
        """Composition as text, e.g. ``"Fe:0.700 Cr:0.190 ..."`` or the formula."""
        if self.formula:
            return self.formula
        return " ".join(f"{el}:{w:.4f}" for el, w in self.mass_fractions)


def formula_mass_fractions(formula: str) -> tuple[tuple[str, float], ...]:
    """Mass fractions of the elements of a chemical formula (e.g. ``"LiFePO4"``)."""
    if not isinstance(formula, str):
        raise XrmInputError(f"chemical formula must be a string, got {formula!r}")
    if formula not in _FORMULAS:
        _FORMULAS[formula] = _formula_mass_fractions(formula)
    return _FORMULAS[formula]


def _formula_mass_fractions(formula: str) -> tuple[tuple[str, float], ...]:
    xraydb = _xraydb()
    try:
        counts = xraydb.chemparse(formula)
    except Exception as exc:  # xraydb raises a bare Exception on bad formulas
        raise XrmInputError(f"cannot parse chemical formula {formula!r}: {exc}") from None
    if not counts:
        raise XrmInputError(f"cannot parse chemical formula {formula!r}")
    masses = {el: n * xraydb.atomic_mass(el) for el, n in counts.items()}
    total = sum(masses.values())
    return tuple(sorted(((el, m / total) for el, m in masses.items()), key=lambda t: t[0]))


def _normalise(fracs: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    total = float(sum(fracs.values()))
    if total <= 0:
        raise XrmInputError("mass fractions must sum to a positive number")
    out: dict[str, float] = {}
    for el, w in fracs.items():
        if w < 0:
            raise XrmInputError(f"mass fraction of {el} is negative ({w})")
        out[el] = out.get(el, 0.0) + w / total
    return tuple(sorted(out.items()))


def mixture(
    name: str,
    components: Sequence[tuple["Material", float]],
    density_g_cm3: float | None = None,
) -> Material:
    """Mix materials by mass fraction.

    Parameters
    ----------
    components : sequence of (Material, mass_fraction)
        Fractions are normalised to 1.
    density_g_cm3 : float, optional
        Bulk density. By default the volume-additive density ``1 / sum(w_i / rho_i)``.
    """
    if not components:
        raise XrmInputError(f"mixture {name!r} has no components")
    wsum = sum(w for _, w in components)
    fracs: dict[str, float] = {}
    inv_rho = 0.0
    for mat, w in components:
        for el, f in mat.mass_fractions:
            fracs[el] = fracs.get(el, 0.0) + f * w / wsum
        inv_rho += (w / wsum) / mat.density_g_cm3
    rho = density_g_cm3 if density_g_cm3 is not None else 1.0 / inv_rho
    desc = " + ".join(f"{w / wsum:.3f} {m.name}" for m, w in components)
    return Material(name, _normalise(fracs), float(rho), desc)


def porous_composite(name: str, solid: Material, fill: Material, porosity: float) -> Material:
    """A porous solid whose pores are filled with ``fill`` (electrolyte, air, ...).

    Bulk density ``rho = (1 - phi) rho_solid + phi rho_fill``; mass fractions weighted by mass.
    """
    if not 0.0 <= porosity < 1.0:
        raise XrmInputError(f"porosity of {name!r} must be in [0, 1), got {porosity!r}")
    m_solid = (1.0 - porosity) * solid.density_g_cm3
    m_fill = porosity * fill.density_g_cm3
    rho = m_solid + m_fill
    mat = mixture(name, [(solid, m_solid), (fill, m_fill)], density_g_cm3=rho)
    return Material(name, mat.mass_fractions, rho,
                    f"{solid.name} with porosity {porosity:.2f} filled by {fill.name}")


def _f(name: str, formula: str, rho: float) -> Material:
    return Material(name, formula_mass_fractions(formula), rho, formula)


def _m(name: str, fracs: Mapping[str, float], rho: float, desc: str | None = None) -> Material:
    return Material(name, _normalise(fracs), rho, desc)


def _by_formula_mass(name: str, parts: Mapping[str, float], rho: float) -> Material:
    """Mixture of formulas given as mass fractions, e.g. glass oxides."""
    fr: dict[str, float] = {}
    for formula, w in parts.items():
        for el, f in formula_mass_fractions(formula):
            fr[el] = fr.get(el, 0.0) + w * f
    desc = " + ".join(f"{w:g} {k}" for k, w in parts.items()) + " (mass)"
    return _m(name, fr, rho, desc)


@lru_cache(maxsize=1)
def named_materials() -> dict[str, Material]:
    """The library of named materials (battery_instrument.md section 3, plus scintillators).

    Returns a dict keyed by canonical name. Lookups through :func:`get_material` are
    case-insensitive and also accept element symbols and formulas with a density.
    """
    lib: dict[str, Material] = {}

    def add(m: Material) -> Material:
        lib[m.name] = m
        return m

    # --- metals and alloys
    for sym, rho in {"Na": 0.968, "Al": 2.70, "Cu": 8.96, "Ni": 8.91, "Fe": 7.874, "W": 19.3,
                     "Be": 1.85, "Ti": 4.506, "Mo": 10.22, "Ag": 10.49, "Sn": 7.29,
                     "Pb": 11.35, "Zn": 7.14, "Li": 0.534}.items():
        add(_m(sym, {sym: 1.0}, rho, sym))
    add(_m("SS304", {"Fe": 0.70, "Cr": 0.19, "Ni": 0.09, "Mn": 0.02}, 8.0,
           "SS304: Fe bal., Cr 19, Ni 9, Mn 2 wt%"))
    add(_m("SS316L", {"Fe": 0.655, "Cr": 0.17, "Ni": 0.12, "Mo": 0.025, "Mn": 0.02, "Si": 0.01},
           8.0, "SS316L: Fe bal., Cr 17, Ni 12, Mo 2.5, Mn 2, Si 1 wt%"))
    add(_m("low_carbon_steel", {"Fe": 0.994, "Mn": 0.005, "C": 0.001}, 7.87,
           "low-carbon steel (can of NiMH cells, Ni-plated)"))
    add(_f("AB5", "La0.5Ce0.3Pr0.05Nd0.15Ni3.55Co0.75Mn0.4Al0.3", 8.2))  # MmNi3.55Co0.75Mn0.4Al0.3
    # --- active materials and additives
    add(_f("LiFePO4", "LiFePO4", 3.60))
    add(_f("graphite", "C", 2.26))
    add(_f("NaLi0.2Ni0.25Mn0.75O2", "NaLi0.2Ni0.25Mn0.75O2", 4.6))
    add(_f("super_p", "C", 1.9))
    add(_f("PTFE", "C2F4", 2.2))
    add(_f("PVDF", "C2H2F2", 1.78))
    add(_f("Na_CMC", "C8H11O7Na", 1.6))
    add(_f("triton_x100", "C33H60O10.5", 1.07))  # C14H22O(C2H4O)9.5
    add(_f("Ni(OH)2", "NiO2H2", 4.1))
    # --- polymers, glass, liquids, gases
    add(_f("PP", "C3H6", 0.90))
    add(_f("PE", "C2H4", 0.94))
    add(_f("PA6", "C6H11NO", 1.14))
    add(_f("PET", "C10H8O4", 1.38))
    add(_f("Kapton", "C22H10N2O5", 1.42))
    add(_f("water", "H2O", 1.0))
    add(_f("SiO2", "SiO2", 2.2))
    add(_f("diamond", "C", 3.51))
    add(_by_formula_mass("borosilicate", {"SiO2": 0.81, "B2O3": 0.13, "Na2O": 0.04,
                                           "Al2O3": 0.02}, 2.23))
    add(_m("air", {"N": 0.7553, "O": 0.2318, "Ar": 0.0128, "C": 0.0001}, 0.001205, "dry air"))
    # electrolytes (mass fractions from 1 M salt at the stated density; estimates)
    add(_by_formula_mass("LiPF6_EC_DMC", {"LiPF6": 0.117, "C3H4O3": 0.488, "C3H6O3": 0.395}, 1.3))
    add(_by_formula_mass("NaClO4_PC", {"NaClO4": 0.094, "C4H6O3": 0.906}, 1.3))
    add(_by_formula_mass("KOH_30wt", {"KOH": 0.30, "H2O": 0.70}, 1.29))
    # --- scintillators
    add(_f("CsI", "CsI", 4.51))
    add(_f("GOS", "Gd2O2S", 7.3))
    add(_f("LuAG", "Lu3Al5O12", 6.73))
    add(_f("YAG", "Y3Al5O12", 4.57))
    add(_f("GGG", "Gd3Ga5O12", 7.08))
    add(_f("GAGG", "Gd3Al2Ga3O12", 6.63))
    # --- composite electrodes and separators (solid skeleton + electrolyte by porosity)
    lfp_solid = mixture("lfp_solid", [(lib["LiFePO4"], 0.85), (lib["super_p"], 0.094),
                                      (lib["Na_CMC"], 0.037), (lib["triton_x100"], 0.019)])
    add(porous_composite("lfp_cathode", lfp_solid, lib["LiPF6_EC_DMC"], 0.35))
    graphite_solid = mixture("graphite_solid", [(lib["graphite"], 0.955), (lib["Na_CMC"], 0.045)])
    add(porous_composite("graphite_anode", graphite_solid, lib["LiPF6_EC_DMC"], 0.35))
    na_solid = mixture("na_cathode_solid", [(lib["NaLi0.2Ni0.25Mn0.75O2"], 0.70),
                                            (lib["PTFE"], 0.10), (lib["super_p"], 0.20)])
    add(porous_composite("na_cathode", na_solid, lib["NaClO4_PC"], 0.45))
    add(porous_composite("gf_separator_lipf6", lib["borosilicate"], lib["LiPF6_EC_DMC"], 0.91))
    add(porous_composite("gf_separator_naclo4", lib["borosilicate"], lib["NaClO4_PC"], 0.91))
    add(porous_composite("nimh_positive", lib["Ni(OH)2"], lib["KOH_30wt"], 0.30))
    add(porous_composite("nimh_negative", lib["AB5"], lib["KOH_30wt"], 0.25))
    add(porous_composite("nimh_separator", lib["PP"], lib["KOH_30wt"], 0.60))
    for key in ("lfp_solid", "graphite_solid", "na_cathode_solid"):
        lib[key] = {"lfp_solid": lfp_solid, "graphite_solid": graphite_solid,
                    "na_cathode_solid": na_solid}[key]
    return lib


#: Common names accepted for named materials (case-insensitive).
ALIASES = {"aluminium": "Al", "aluminum": "Al", "copper": "Cu", "nickel": "Ni", "iron": "Fe",
           "tungsten": "W", "beryllium": "Be", "titanium": "Ti", "sodium": "Na", "lithium": "Li",
           "stainless_steel": "SS304", "polypropylene": "PP", "polyethylene": "PE", "nylon": "PA6",
           "kapton": "Kapton", "glass_fibre": "borosilicate", "lfp": "LiFePO4", "carbon": "graphite"}


def resolved_lookups() -> dict[str, dict]:
    """A copy of the material and formula lookups answered so far in this process."""
    return {"materials": dict(_RESOLVED), "formulas": dict(_FORMULAS)}


def preload_lookups(lookups: Mapping[str, Mapping]) -> None:
    """Answer these lookups without xraydb (from :func:`resolved_lookups` on another machine)."""
    for key, mat in lookups.get("materials", {}).items():
        if not isinstance(mat, Material):
            raise XrmInputError(f"preloaded material {key!r} is not a Material")
        _RESOLVED[key] = mat
    _FORMULAS.update(lookups.get("formulas", {}))


#: Where the named materials are listed with their composition and density.
MATERIALS_DOC = "docs/materials.md"


def allowed_materials(density_key: str | None = "density_g_cm3") -> str:
    """What a material key accepts, for error messages: every named material and alias, and the
    element-symbol and formula forms.

    ``density_key`` is the key that gives a density beside the material (e.g.
    ``phantom.parts[0].density_g_cm3``), or None where the context takes no density (the
    scintillator, the materials of a label file): a formula is then not offered.
    """
    names = ", ".join(sorted(named_materials(), key=str.lower))
    aliases = ", ".join(sorted(ALIASES, key=str.lower))
    text = (f"Allowed: a named material ({names}; aliases {aliases}; compositions and densities "
            f"in {MATERIALS_DOC}), ")
    if density_key is None:
        return text + "or an element symbol (e.g. 'Cr', at xraydb's density)"
    return text + (f"an element symbol (e.g. 'Cr', at xraydb's density unless {density_key} is "
                   f"given) or a chemical formula with {density_key} (e.g. 'Al2O3' with "
                   f"{density_key.rsplit('.', 1)[-1]} = 3.95)")


def xraydb_densities(formula: str) -> list[tuple[str, float]]:
    """(name, density g/cm3) of the entries of xraydb's materials table with exactly this
    formula (e.g. ``"SiO2"``: silica 2.2, quartz 2.65, cristobalite 2.27); [] if none."""
    try:
        table = _xraydb().get_materials()
    except Exception:  # noqa: BLE001 - a hint only
        return []
    return [(str(m.name), float(m.density)) for m in table.values() if m.formula == formula]


def get_material(name: str, density_g_cm3: float | None = None, *, key: str | None = None,
                 density_key: str | None = "density_g_cm3") -> Material:
    """Look up a material by name, element symbol or chemical formula.

    Parameters
    ----------
    name : str
        A named material (see :func:`named_materials`, case-insensitive; ``docs/materials.md``),
        an element symbol (density from xraydb unless given) or a chemical formula
        (``density_g_cm3`` required).
    density_g_cm3 : float, optional
        Overrides the tabulated density.
    key : str, optional
        The scenario key that gave ``name`` (e.g. ``"phantom.parts[0].material"``): error
        messages start with it.
    density_key : str or None
        The key that gives the density beside it (named in messages), or None where the
        context takes no density (a formula is then refused with that reason).

    Raises
    ------
    XrmInputError
        Unknown name (the message names the key, lists close matches, every named material
        and the element / formula forms), a formula without a density (the message names
        ``density_key`` and the densities xraydb lists for that formula), or a bad density.

    Notes
    -----
    A formula that is also a named material (``SiO2``, ``LiFePO4``, ``CsI``, ...) takes the
    library's density (``docs/materials.md``). Any other formula needs ``density_g_cm3``, even
    where xraydb's materials table holds the formula: one formula has several densities there
    (SiO2 as silica 2.2, cristobalite 2.27 and quartz 2.65 g/cm3; BN 2.1 and 3.45), and mu
    scales with the density, so the twin does not pick one; the message lists them.
    """
    where = f"{key}: " if key else ""
    if not isinstance(name, str) or not name.strip():
        raise XrmInputError(f"{where}material must be a non-empty string (a material name, "
                            f"element symbol or formula), got {name!r}")
    if density_g_cm3 is not None:
        dk = density_key or "density_g_cm3"
        label = dk if key else f"density_g_cm3 of {name!r}"
        try:
            rho = float(density_g_cm3)
        except (TypeError, ValueError):
            raise XrmInputError(f"{label} must be a number (g/cm3), got {density_g_cm3!r}") from None
        if isinstance(density_g_cm3, bool) or not np.isfinite(rho) or rho <= 0:
            raise XrmInputError(f"{label} must be a finite number > 0 (g/cm3), got {density_g_cm3!r}")
    memo_key = (name, None if density_g_cm3 is None else float(density_g_cm3))
    if memo_key not in _RESOLVED:
        try:
            _RESOLVED[memo_key] = _lookup(name, density_g_cm3, density_key)
        except XrmInputError as exc:
            if not key:
                raise
            raise XrmInputError(f"{where}{exc}") from None
    return _RESOLVED[memo_key]


def _lookup(name: str, density_g_cm3: float | None, density_key: str | None = "density_g_cm3"
            ) -> Material:
    lib = named_materials()
    lower = {k.lower(): k for k in lib}
    key = name.strip()
    key = ALIASES.get(key.lower().replace(" ", "_"), key)
    if key.lower() in lower:
        mat = lib[lower[key.lower()]]
        return mat.with_density(density_g_cm3) if density_g_cm3 is not None else mat
    # element symbol with tabulated density
    xraydb = _xraydb()
    try:
        z = xraydb.atomic_number(key)
    except Exception:
        z = None
    if z and key[0].isupper():
        rho = density_g_cm3 if density_g_cm3 is not None else xraydb.atomic_density(key)
        return Material(key, ((key, 1.0),), float(rho), key)
    # a formula: only with an explicit density, and only if every token is an element
    looks_like_formula = key[0].isupper() and any(c.isdigit() for c in key) or (
        key[0].isupper() and sum(c.isupper() for c in key) >= 2 and key.isalnum())
    if looks_like_formula and density_g_cm3 is not None and density_key is not None:
        return Material(key, formula_mass_fractions(key), float(density_g_cm3), key)
    allowed = allowed_materials(density_key)
    hint = close_matches(name, list(lib) + list(ALIASES))
    msg = f"unknown material {name!r}"
    if hint:
        msg += f"; did you mean {', '.join(repr(h) for h in hint)}?"
    if looks_like_formula:
        try:
            formula_mass_fractions(key)
        except XrmInputError:
            pass
        else:
            same = [m for m in lib.values() if m.formula == key]
            known = xraydb_densities(key)
            more = ""
            if same:
                more += "; the library has this formula as " + ", ".join(
                    f"{m.name!r} ({m.density_g_cm3:g} g/cm3)" for m in same)
            if known:
                more += (f"; xraydb's materials table has {key} as " +
                         ", ".join(f"{n} {r:g}" for n, r in known) + " g/cm3")
            if density_key is None:
                raise XrmInputError(f"{msg} As a chemical formula, {name!r} would need a density, "
                                    f"which this key does not take{more}. {allowed}")
            raise XrmInputError(f"{msg} As a chemical formula, {name!r} needs a density: give "
                                f"{density_key} (g/cm3){more}. {allowed}")
    raise XrmInputError(f"{msg}{'' if hint else ';'} {allowed}")


def materials_markdown() -> str:
    """The named materials as a markdown table (docs/materials.md)."""
    lines = ["| name | density (g/cm3) | composition |", "|---|---|---|"]
    for name, m in sorted(named_materials().items(), key=lambda kv: kv[0].lower()):
        lines.append(f"| `{name}` | {m.density_g_cm3:.4g} | {m.describe()} |")
    lines.append("")
    lines.append("Aliases: " + ", ".join(f"`{a}` = `{b}`" for a, b in sorted(ALIASES.items())))
    return "\n".join(lines)
