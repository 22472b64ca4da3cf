"""The pytest wiring lives in harness/pytest_plugin.py, registered as a pytest11 entry point
(`pip install -e .` makes pytest load it); see `pytest --help`, group pgrepl-harness."""
