"""Origin-side library for CPython services (asyncio first): Redis and PostgreSQL
backends of the patterns the edge also implements. Never shipped to the edge.

Install with ``pip install edge-kv[origin]``.
"""
