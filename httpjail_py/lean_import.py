"""Enter a third-party package without running its `__init__`.

Some packages import everything they have from their `__init__`: mitmproxy's addons
package (some twenty addons httpjail never loads) and pyroute2 (about forty modules for
every netlink family). Each start of httpjail would pay for them, a tenth of a second or
more. `enter_bare(name)` registers the package as a bare module over the same directory,
so that importing one of its modules runs that module and what it imports, nothing else.
Only for packages whose `__init__` defines nothing the modules we import rely on.
"""

from __future__ import annotations

import importlib.util
import sys
import types

__all__ = ["enter_bare"]


def enter_bare(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return  # not installed, or not a package: the normal import reports it
    package = types.ModuleType(name, f"{name} (its modules only; the package's __init__ is not run)")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__package__ = name
    sys.modules[name] = package
