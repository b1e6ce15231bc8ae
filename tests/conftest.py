"""Shared fixtures: owned by the integration suite; subdirectories add their own."""
