"""Linux strong mode: a network namespace per jail, wired so that its traffic can only
reach the proxy and the DNS sinkhole on the host.

pyroute2's `__init__` imports a module for every netlink family it knows (50 to 100 ms of
each start); this package uses `IPRoute` and `netns` only, so pyroute2 is entered without
it (`lean_import`).
"""

from httpjail_py.lean_import import enter_bare

enter_bare("pyroute2")
