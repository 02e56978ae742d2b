"""Built-in scenario files and the scenario schema."""
