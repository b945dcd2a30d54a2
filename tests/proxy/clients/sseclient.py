"""A jailed SSE reader: prints each event with the seconds since the response began (the
request itself may wait for the proxy to load: the command starts first).

Usage: sseclient.py URL   (urllib, proxy and CA from the environment)
Prints one JSON line: {"events": [[seconds, data], ...]}.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request

events = []
with urllib.request.urlopen(sys.argv[1], timeout=20) as response:
    start = time.monotonic()
    for line in response:
        if line.startswith(b"data: "):
            events.append([round(time.monotonic() - start, 3), line[6:].decode().strip()])
print(json.dumps({"events": events}), flush=True)
