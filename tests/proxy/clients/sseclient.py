"""A jailed SSE reader: prints each event with the seconds since the request started.

Usage: sseclient.py URL   (urllib, proxy and CA from the environment)
Prints one JSON line: {"events": [[seconds, data], ...]}.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request

start = time.monotonic()
events = []
with urllib.request.urlopen(sys.argv[1], timeout=20) as response:
    for line in response:
        if line.startswith(b"data: "):
            events.append([round(time.monotonic() - start, 3), line[6:].decode().strip()])
print(json.dumps({"events": events}), flush=True)
