"""Shared fixtures for every test: see tests/harness/plugin.py for the list."""

from tests.harness.plugin import *  # noqa: F401,F403  (fixtures and the failure-tracking hook)
