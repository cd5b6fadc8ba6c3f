"""Code versions tied to the code they version: a digest of a module's source and of every
module of the package that it reaches through its imports."""

from __future__ import annotations

import hashlib
import inspect
import sys
from types import ModuleType


def _imported_modules(module: ModuleType, package: str) -> set[str]:
    """Modules of `package` that `module`'s globals name (imported modules, or the modules of
    imported functions and classes)."""
    found = set()
    for value in vars(module).values():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        if isinstance(name, str) and (name == package or name.startswith(package + ".")):
            found.add(name)
    return found


def reachable_modules(module_name: str, package: str) -> list[str]:
    """`module_name` and every module of `package` reachable from it through imports, sorted."""
    seen: set[str] = set()
    pending = [module_name]
    while pending:
        name = pending.pop()
        if name in seen or name not in sys.modules:
            continue
        seen.add(name)
        pending.extend(_imported_modules(sys.modules[name], package) - seen)
    return sorted(seen)


def source_digest(module_name: str, package: str = "governance_assets") -> str:
    """A 16-hex-digit digest of the source of `module_name` and of everything it reaches in
    `package`: it changes whenever the code an asset runs changes."""
    digest = hashlib.sha256()
    for name in reachable_modules(module_name, package):
        module = sys.modules[name]
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):  # a namespace package or a module without a file
            source = ""
        digest.update(name.encode() + b"\0" + source.encode() + b"\0")
    return digest.hexdigest()[:16]
