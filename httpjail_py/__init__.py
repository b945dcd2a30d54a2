"""httpjail-py: run a process so that its HTTP(S) traffic can only leave through a
rule-checking, logging proxy (a Python re-implementation of coder/httpjail).

Layout: `cli` parses flags into a `config.Config`; `app` wires the CA, a rule engine
(`engines/`), the embedded mitmproxy (`proxy/`, the only code that imports mitmproxy)
and a jail backend (`jail/`) together and runs them on one asyncio loop.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
