"""Testing helpers for plugin authors: an isolated registry, in-memory plugins and per-role conformance suites.

The fixtures are available in every pytest run once prism-core is installed (``pytest11`` entry point);
the conformance base classes live in ``prism_core.testing.conformance``.
"""
