"""Jail backends: how a child is made to send its traffic through the proxy.

Each backend implements `base.Jail`. `select_jail` picks one for a `Config`.
"""

from httpjail_py.jail.base import Jail, select_jail

__all__ = ["Jail", "select_jail"]
