"""Fixtures shared across test packages."""

# The toy-width copies of the published checkpoints (``published``), built once per session.
pytest_plugins = ["tests.pipelines.published_layouts"]
