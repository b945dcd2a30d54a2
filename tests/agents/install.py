"""The real agents, installed from the npm registry into a cache the tests own.

Each pinned package goes to `<cache>/<name>-<version>/` (an `npm install --prefix` tree),
made once per machine and reused by later runs: `HTTPJAIL_TEST_CACHE`, else
/var/cache/httpjail-py-tests as root, else ~/.cache/httpjail-py-tests. An install is made
in a temporary directory and renamed into place, under a lock, so concurrent test workers
and a killed run never see half a tree.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    name: str  # on npm
    version: str
    command: str  # its entry in node_modules/.bin

    @property
    def directory_name(self) -> str:
        return f"{self.name.replace('@', '').replace('/', '-')}-{self.version}"


CODEX = Package("@openai/codex", "0.169.0", "codex")
CLAUDE_CODE = Package("@anthropic-ai/claude-code", "2.1.332", "claude")


def cache_root() -> Path:
    if configured := os.environ.get("HTTPJAIL_TEST_CACHE"):
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/httpjail-py-tests")
    return Path.home() / ".cache" / "httpjail-py-tests"


class InstallError(RuntimeError):
    pass


def install(package: Package) -> Path:
    """The installed tree (`<tree>/node_modules/.bin/<command>` is the agent)."""
    root = cache_root() / "agents"
    root.mkdir(parents=True, exist_ok=True)
    tree = root / package.directory_name
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (tree / "node_modules" / ".bin" / package.command).exists():
            return tree
        if shutil.which("npm") is None:
            raise InstallError("npm is not installed (Debian package npm)")
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
        try:
            # Install scripts run, as for a user: Claude Code's links its native binary.
            result = subprocess.run(
                ["npm", "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--loglevel=error",
                 f"{package.name}@{package.version}"],
                capture_output=True, text=True, timeout=900,
            )
            if result.returncode != 0:
                raise InstallError(f"npm install {package.name}@{package.version} failed:\n{result.stderr}")
            staging.rename(tree)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return tree
