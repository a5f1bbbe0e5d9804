"""Adapters over the Cloudflare Workers runtime (stdlib + ``js``/``pyodide``/``workers`` only)."""
