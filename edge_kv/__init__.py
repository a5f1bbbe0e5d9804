"""edge_kv: coordination patterns shared by Cloudflare Python Workers and origin services.

Layout (the architecture, outermost last):

* :mod:`edge_kv.core`   -- stdlib-only algorithms with no I/O. Runs on CPython and on
  Pyodide 314 (the Python Workers interpreter). Every backend calls these.
* :mod:`edge_kv.edge`   -- adapters over the Workers runtime (KV, Cache API, Durable
  Objects, ``request.cf``). Stdlib + runtime modules only.
* :mod:`edge_kv.origin` -- CPython services: Redis, PostgreSQL, httpx, ASGI.
  Never shipped to the edge.
"""

from importlib import metadata as _metadata

try:
    # One version source: pyproject.toml, through the installed distribution's metadata.
    __version__ = _metadata.version("edge-kv")
except _metadata.PackageNotFoundError:  # vendored without metadata (a Worker upload)
    __version__ = "0+unknown"

__all__ = ["__version__"]
