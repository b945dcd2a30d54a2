"""The embedded mitmproxy. Nothing outside this package imports mitmproxy.

Importing any addon module of mitmproxy runs `mitmproxy/addons/__init__.py`, which
imports every default addon (about 0.3 s of httpjail's start, for some twenty addons it
never loads). The package is entered as a bare namespace over the same directory
(`lean_import`), so that only the addon modules httpjail names are imported. Nothing
here uses what the real `__init__` defines (`default_addons`, for the mitmproxy tools).
"""

from httpjail_py.lean_import import enter_bare

enter_bare("mitmproxy.addons")
