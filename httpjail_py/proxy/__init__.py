"""The embedded mitmproxy. Nothing outside this package imports mitmproxy."""
