"""Python half of the offline host: what workerd's entrypoint helper does for a Python Worker.

The host (scripts/host/*.mjs) loads this module into Pyodide next to the Worker. It finds the
entrypoint classes, builds instances with the real ``workers`` SDK wrapping (``env``/``ctx``),
and converts arguments and results at the call boundary exactly as workerd does: arguments
through ``python_from_rpc`` (so a JS ``Request`` arrives as ``workers.Request``), results
through ``python_to_rpc`` (so a ``workers.Response`` leaves as a JS ``Response``).
Not part of the Worker upload; the Worker never imports it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from workers import DurableObject, WorkerEntrypoint, python_from_rpc, python_to_rpc

# pyodide.code.relaxed_call exists in Pyodide 314 but not in the CPython type stubs.
relaxed_call = importlib.import_module("pyodide.code").relaxed_call


def import_entry(module_name: str) -> Any:
    """Import the Worker's main module (raises whatever its import raises)."""
    return importlib.import_module(module_name)


def check_class(module: Any, class_name: str, kind: str) -> str:
    """Return "" if ``module.class_name`` is a subclass of the SDK base for ``kind``, else why not."""
    base = DurableObject if kind == "durable_object" else WorkerEntrypoint
    cls = getattr(module, class_name, None)
    if cls is None:
        return f"class {class_name!r} is not defined in the Worker's main module {module.__name__!r}"
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        return f"{class_name!r} in {module.__name__!r} is not a subclass of workers.{base.__name__}"
    return ""


def has_legacy_handler(module: Any, name: str) -> bool:
    """Whether the module defines the legacy module-level handler ``name`` (``on_fetch``)."""
    return callable(getattr(module, name, None))


async def call_legacy(module: Any, name: str, *args: Any) -> Any:
    """Call a legacy handler (``on_fetch(request, env, ctx)``) with the raw JavaScript objects,
    as workerd does for Workers without a ``Default`` class; extra arguments are dropped
    when the function takes fewer."""
    result = relaxed_call(getattr(module, name), *args)
    if inspect.isawaitable(result):
        result = await result
    return python_to_rpc(result)


def describe_exception(message: str) -> str:
    """One readable line for a Python traceback: the complete exception (every line of it,
    not only the last, so Pyodide's multi-line ModuleNotFoundError keeps the module name)
    and where in the Worker's own code it happened."""
    lines = [ln.rstrip() for ln in message.strip().splitlines() if ln.strip()]
    # The exception text starts at the first unindented line after the last frame (a frame is
    # '  File "..."' plus its indented source lines); it may itself have indented lines.
    start = 0
    last_frame = max((i for i, ln in enumerate(lines) if ln.startswith('  File "')), default=-1)
    if last_frame >= 0:
        start = next(
            (i for i in range(last_frame + 1, len(lines)) if not lines[i].startswith(" ")), len(lines)
        )
    exception = " ".join(ln.strip() for ln in lines[start:]) or message.strip()
    where = ""
    for ln in lines:
        stripped = ln.strip()
        if stripped.startswith('File "/worker/') or stripped.startswith('File "/deps'):
            where = stripped
    if where:
        path, _, rest = where.partition('", ')
        where = " (at " + path.removeprefix('File "') + ", " + rest + ")"
    return exception + where


def new_instance(module: Any, class_name: str, ctx: Any, env: Any) -> Any:
    """Construct an entrypoint or Durable Object instance (the SDK wraps ctx and env)."""
    return getattr(module, class_name)(ctx, env)


def has_method(instance: Any, name: str) -> bool:
    """Whether ``instance`` has a public callable attribute ``name`` (RPC never reaches _private)."""
    return not name.startswith("_") and callable(getattr(instance, name, None))


async def call(relaxed: bool, instance: Any, name: str, *args: Any) -> Any:
    """Call ``instance.name(*args)`` the way workerd's introspection wrapper does."""
    method = getattr(instance, name)
    py_args = [python_from_rpc(arg) for arg in args]
    result = relaxed_call(method, *py_args) if relaxed else method(*py_args)
    if inspect.isawaitable(result):
        result = await result
    return python_to_rpc(result)


def last_line(message: str) -> str:
    """The ``Type: message`` line at the end of a Python traceback (what an RPC caller sees)."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else message
