"""Assemble the Worker upload: ``src/*.py`` plus the edge-safe part of ``edge_kv``.

Wrangler 4 uploads every ``*.py`` under the directory of ``main`` and does not follow
symlinks, so the upload is built as a real directory (``build/worker`` by default)
that holds exactly what runs at the edge: the entry module and ``edge_kv`` without
``edge_kv/origin``. ``wrangler.toml`` runs this as its ``[build]`` command; the
offline host runs the same directory, so what is tested is what is deployed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXCLUDED_PACKAGES = {"origin", "host"}
# Unit-test doubles (in-memory bindings over sqlite3) never run in a Worker.
EXCLUDED_MODULES = {("edge", "testing.py")}


def _ignore(directory: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))}
    if Path(directory).resolve() == (ROOT / "edge_kv").resolve():
        skipped |= EXCLUDED_PACKAGES & set(names)
    here = Path(directory).resolve()
    for package, module in EXCLUDED_MODULES:
        if here == (ROOT / "edge_kv" / package).resolve() and module in names:
            skipped.add(module)
    return skipped


def build(out: Path) -> Path:
    """(Re)create ``out`` with the entry modules and the edge package; return it."""
    out = out.resolve()
    if out == ROOT or ROOT.is_relative_to(out):
        raise SystemExit(f"refusing to build into {out}: it would contain the project")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for module in sorted((ROOT / "src").glob("*.py")):
        shutil.copy2(module, out / module.name)
    shutil.copytree(ROOT / "edge_kv", out / "edge_kv", ignore=_ignore)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "worker")
    args = parser.parse_args()
    print(f"assembled Worker upload in {build(args.out)}")


if __name__ == "__main__":
    main()
