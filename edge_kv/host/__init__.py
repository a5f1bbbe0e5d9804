"""The offline host for any Python Worker (CPython tooling, never shipped to the edge).

It runs a Worker on the real Pyodide 314 interpreter with the real ``workers`` SDK and takes
KV, Cache API and Durable Object storage from Miniflare 4 (docs/host.md). Three ways in:

* the ``edge-kv`` command (:mod:`.cli`): ``edge-kv dev`` serves a Worker directory,
  ``edge-kv scheduled`` fires its cron handler;
* the pytest plugin (:mod:`.pytest_plugin`, loaded automatically once edge-kv is installed):
  the ``edge_kv_host`` fixture starts the host for your ``wrangler.toml``;
* :class:`HostProcess`, the child process both of them use.
"""

from __future__ import annotations

from .process import HostExited, HostProcess

__all__ = ["HostExited", "HostProcess"]
