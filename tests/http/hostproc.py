"""The offline host as a child process, for tests: re-exported from :mod:`edge_kv.host.process`
(the same class the CLI and the pytest plugin use)."""

from __future__ import annotations

from pathlib import Path

from edge_kv.host.process import HostExited, HostProcess

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "HostExited", "HostProcess"]
