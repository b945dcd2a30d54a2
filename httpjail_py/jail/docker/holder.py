"""The holder container: the owner of a Docker jail's network namespace.

Docker cannot put a container into a namespace of ours, but a container can join another
one's (`--network container:<holder>`). So the holder starts with `--network none` (only
`lo`: a container that joins before the wiring is done can reach nothing), its namespace
is named on the host (`ip netns attach`) and wired like a strong jail's, and then the
user's container joins it.

The holder runs a program of ours that only waits: a static executable of a few bytes,
made here for the machine's architecture, in an image of its own (`docker import`,
cached by its content). No registry is needed.

Every container of a jail carries the label `httpjail-py.jail=<id>`, which is how the
sweep finds what a killed httpjail left.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import struct
import tarfile
from typing import Any

from httpjail_py.errors import JailSetupError

__all__ = ["HOLDER_REPOSITORY", "LABEL", "holder_image", "pause_executable", "start_holder"]

LABEL = "httpjail-py.jail"
HOLDER_REPOSITORY = "httpjail-py-holder"

# Machine code of `for (;;) pause();` (aarch64 has no pause: `ppoll(NULL, 0, NULL, NULL)`).
_CODE = {
    "x86_64": (0x3E, bytes.fromhex("b822000000" "0f05" "ebf7")),  # mov eax,34; syscall; jmp
    "aarch64": (0xB7, b"".join(struct.pack("<I", word) for word in (
        0xD2800000, 0xD2800001, 0xD2800002, 0xD2800003,  # mov x0..x3, #0
        0xD2800928, 0xD4000001, 0x17FFFFFA,  # mov x8, #73 (ppoll); svc #0; b .-24
    ))),
}
_BASE = 0x400000
_HEADERS = 64 + 56  # ELF header + one program header


def pause_executable(machine: str | None = None) -> bytes:
    """A static ELF executable that waits forever. Raises JailSetupError for an
    architecture we have no code for."""
    machine = machine or platform.machine()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if machine not in _CODE:
        raise JailSetupError(f"--docker-run has no holder program for this architecture ({machine})")
    e_machine, code = _CODE[machine]
    size = _HEADERS + len(code)
    elf = struct.pack(
        "<4sBBBB8xHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0,  # 64-bit, little endian, version 1, System V
        2, e_machine, 1, _BASE + _HEADERS, 64, 0,  # executable; entry; program headers at 64
        0, 64, 56, 1, 0, 0, 0,
    )
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)  # LOAD, R+X
    return elf + program + code


def _image_tar(executable: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = len(executable), 0o755, 0
        tar.addfile(info, io.BytesIO(executable))
    return buffer.getvalue()


def holder_image(client: Any) -> str:
    """The holder image's reference, imported into the engine if it is not there yet."""
    data = _image_tar(pause_executable())
    tag = hashlib.sha256(data).hexdigest()[:16]
    reference = f"{HOLDER_REPOSITORY}:{tag}"
    import docker.errors

    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        client.api.import_image_from_data(data, repository=HOLDER_REPOSITORY, tag=tag)
    return reference


def start_holder(client: Any, jail_id: str, dns: str) -> tuple[Any, int]:
    """Start the holder of jail `jail_id`. Returns (container, its PID on the host)."""
    container = client.containers.run(
        holder_image(client),
        command=["/pause"],
        name=f"httpjail_{jail_id}_holder",
        labels={LABEL: jail_id},
        network_mode="none",
        dns=[dns],
        cap_drop=["ALL"],
        read_only=True,
        detach=True,
    )
    container.reload()
    pid = int(container.attrs["State"]["Pid"])
    if pid <= 0 or not os.path.exists(f"/proc/{pid}/ns/net"):
        raise JailSetupError(
            "the holder container's process is not on this host: --docker-run needs the local "
            "Docker engine (DOCKER_HOST must name a socket on this machine)"
        )
    return container, pid
