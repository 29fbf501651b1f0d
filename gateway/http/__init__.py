"""The gateway's local HTTP API: metrics, health, devices, links, commands, quarantine (see api.py)."""
from gateway.http.api import HttpApi

__all__ = ["HttpApi"]
