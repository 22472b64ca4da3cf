"""The pytest plugin, in parts; harness.pytest.plugin is what a project's conftest.py loads."""
