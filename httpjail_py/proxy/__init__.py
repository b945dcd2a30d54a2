"""The embedded mitmproxy. Nothing outside this package imports mitmproxy.

Importing any addon module of mitmproxy runs `mitmproxy/addons/__init__.py`, which
imports every default addon (about 0.3 s of httpjail's start, for some twenty addons it
never loads). The package is entered here as a bare namespace over the same directory,
so that only the addon modules httpjail names are imported. Nothing here uses what the
real `__init__` defines (`default_addons`, for the mitmproxy tools).
"""

import importlib.util
import sys
import types


def _lean_addons_package() -> None:
    if "mitmproxy.addons" in sys.modules:
        return
    spec = importlib.util.find_spec("mitmproxy.addons")
    if spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType("mitmproxy.addons", "mitmproxy's addons (their modules only)")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__package__ = "mitmproxy.addons"
    sys.modules["mitmproxy.addons"] = package


_lean_addons_package()
