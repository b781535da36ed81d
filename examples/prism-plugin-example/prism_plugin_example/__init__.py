"""Example third-party prism plugin (see docs/writing-plugins.md)."""
