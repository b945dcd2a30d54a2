"""The test image: a small root file system made of this host's own binaries (sh, a few
coreutils, curl, python3 with its standard library) and the libraries they load, imported
with `docker import`. No registry is reached. Tagged by the content it was made from, so
it is made once per machine and reused until a host binary changes.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

REPOSITORY = "httpjail-py-test"
BINARIES = (
    "/bin/sh",
    "/bin/dash",
    "/usr/bin/env",
    "/usr/bin/cat",
    "/usr/bin/sleep",
    "/usr/bin/id",
    "/usr/bin/ls",
    "/usr/bin/head",
    "/usr/bin/true",
    "/usr/bin/date",
    "/usr/bin/curl",
    "/usr/bin/python3",
)
PYTHON_LIB = Path("/usr/lib/python3.11")
SKIP = re.compile(r"/(test|tests|idlelib|tkinter|turtledemo|ensurepip|lib2to3|pydoc_data|__pycache__)(/|$)")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _libraries(paths: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in range(0, len(paths), 200):
        out = subprocess.run(["ldd", *paths[chunk : chunk + 200]], capture_output=True, text=True).stdout
        found.update(re.findall(r"(/\S+\.so[^\s:]*)", out))
    return {lib for lib in found if os.path.exists(lib)}


def _files(extra: tuple[str, ...], libraries_for: tuple[str, ...]) -> list[str]:
    python_files = [str(p) for p in PYTHON_LIB.rglob("*") if p.is_file() and not SKIP.search(str(p))]
    executables = [p for p in (*BINARIES, *extra) if os.path.exists(p)]
    shared = [p for p in python_files if p.endswith(".so")]
    libraries = _libraries([*executables, *shared, *libraries_for])
    return sorted(set(executables) | set(python_files) | libraries)


def _tar(files: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (("tmp", 0o1777), ("root", 0o700), ("etc", 0o755), ("work", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for path in files:
            # Symlinks are followed: each name gets the file it points at.
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"), recursive=False)
    return buffer.getvalue()


def build_test_image(client: Any, extra: tuple[str, ...] = (), libraries_for: tuple[str, ...] = ()) -> str:
    """The image's reference, imported into the engine if it is not there yet. `extra`
    host binaries go in too; `libraries_for` names programs that will be mounted into
    the container, whose shared libraries the image must have."""
    files = _files(extra, libraries_for)
    digest = hashlib.sha256()
    for path in files:
        stat = os.stat(path)
        digest.update(f"{path} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    tag = digest.hexdigest()[:16]
    reference = f"{REPOSITORY}:{tag}"
    import docker.errors

    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        client.api.import_image_from_data(_tar(files), repository=REPOSITORY, tag=tag)
    return reference
