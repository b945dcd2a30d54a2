"""A jailed HTTP client: fetch a URL with urllib or requests, print one JSON line.

Usage: pyfetch.py urllib|requests URL [--data-bytes N]
Output: {"status": int, "headers": {lower-case name: value}, "body": str} or {"error": str}.
Both libraries find the proxy (HTTP(S)_PROXY) and the CA (SSL_CERT_FILE,
REQUESTS_CA_BUNDLE) in the environment the jail set, as they would for any user.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def with_urllib(url: str, data: bytes | None) -> dict[str, object]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, e.headers, e.read()
    return {"status": status, "headers": {k.lower(): v for k, v in headers.items()}, "body": body.decode()}


def with_requests(url: str, data: bytes | None) -> dict[str, object]:
    import requests

    response = requests.request("POST" if data is not None else "GET", url, data=data, timeout=20)
    return {
        "status": response.status_code,
        "headers": {k.lower(): v for k, v in response.headers.items()},
        "body": response.text,
    }


def main() -> None:
    lib, url = sys.argv[1], sys.argv[2]
    data = b"d" * int(sys.argv[4]) if sys.argv[3:4] == ["--data-bytes"] else None
    try:
        out = (with_urllib if lib == "urllib" else with_requests)(url, data)
    except Exception as e:  # the test reads the error text
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
