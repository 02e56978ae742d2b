"""docs/scenarios.md is generated from the schema and must be current."""

from pathlib import Path

from twin.scenario import schema_markdown


def test_scenario_docs_are_current():
    text = (Path(__file__).parents[1] / "docs" / "scenarios.md").read_text()
    assert schema_markdown() in text


def test_materials_docs_are_current():
    from twin.materials import materials_markdown

    text = (Path(__file__).parents[1] / "docs" / "materials.md").read_text()
    assert materials_markdown() in text


def test_composite_density_is_porosity_weighted():
    """Bulk density of a porous composite: (1 - phi) rho_solid + phi rho_fill, by hand."""
    from twin.materials import get_material, porous_composite

    solid, fill = get_material("LiFePO4"), get_material("LiPF6_EC_DMC")
    comp = porous_composite("x", solid, fill, 0.35)
    assert comp.density_g_cm3 == (1 - 0.35) * 3.60 + 0.35 * 1.3
    # attenuation is the mass-weighted sum of the two (linear in density)
    e = 40.0
    expected = (1 - 0.35) * solid.mu_per_mm(e) + 0.35 * fill.mu_per_mm(e)
    assert comp.mu_per_mm(e).item() == __import__("pytest").approx(expected.item(), rel=1e-9)
