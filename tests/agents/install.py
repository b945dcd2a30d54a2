"""The real agents, installed from the npm registry into a cache the tests own.

`python -m tests.agents.install` (run by scripts/test before pytest: installing is set-up,
and no test reaches the registry) puts each pinned package in `<cache>/<name>-<version>/`
(an `npm install --prefix` tree), once per machine: `HTTPJAIL_TEST_CACHE`, else
/var/cache/httpjail-py-tests as root, else ~/.cache/httpjail-py-tests. An install is made
in a temporary directory and renamed into place, under a lock, so that a concurrent or a
killed run never sees half a tree. The tests and scripts/demo use `installed()`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
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


def _tree(package: Package) -> Path:
    return cache_root() / "agents" / package.directory_name


def installed(package: Package) -> Path | None:
    """The installed tree (`<tree>/node_modules/.bin/<command>` is the agent), or None."""
    tree = _tree(package)
    return tree if (tree / "node_modules" / ".bin" / package.command).exists() else None


def install(package: Package) -> Path:
    """The installed tree, installing the package first if it is not there."""
    tree = _tree(package)
    tree.parent.mkdir(parents=True, exist_ok=True)
    with open(tree.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed(package):
            return tree
        if shutil.which("npm") is None:
            raise InstallError("npm is not installed (Debian package npm)")
        staging = Path(tempfile.mkdtemp(dir=tree.parent, prefix=".staging-"))
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


PACKAGES = (CODEX, CLAUDE_CODE)

if __name__ == "__main__":
    for package in PACKAGES:
        if installed(package) is None:
            print(f"httpjail-setup: installing {package.name}@{package.version} for the agent tests",
                  file=sys.stderr, flush=True)
        try:
            print(install(package))
        except InstallError as e:
            sys.exit(f"httpjail-setup: {e}")
