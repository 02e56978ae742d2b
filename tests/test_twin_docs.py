"""docs/scenarios.md is generated from the schema and must be current."""

from pathlib import Path

from twin.scenario import schema_markdown


def test_scenario_docs_are_current():
    text = (Path(__file__).parents[1] / "docs" / "scenarios.md").read_text()
    assert schema_markdown() in text
