"""A CA directory in OpenSSL's `SSL_CERT_DIR` layout, holding the system CAs and ours.

OpenSSL (and whatever uses it: curl, Python, git, Ruby...) looks a CA up in a directory
by the file name `<subject hash>.<n>`, not by reading every file. So the directory we
hand to jailed tools has our CA under its hash, next to links to the system directory's
own hashed entries: a client that only reads `SSL_CERT_DIR` trusts both.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

__all__ = ["write_cert_dir", "system_cert_dir", "subject_hash"]

_HASHED = re.compile(r"^[0-9a-f]{8}\.\d+$")


def subject_hash(cert_pem: bytes) -> str:
    """OpenSSL's subject-name hash of a certificate, as it names files (8 hex digits)."""
    from OpenSSL import crypto  # 50 ms with cryptography: only for a CA not yet in place

    return f"{crypto.load_certificate(crypto.FILETYPE_PEM, cert_pem).subject_name_hash():08x}"


def system_cert_dir() -> Path | None:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.capath, paths.openssl_capath, "/etc/ssl/certs"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def write_cert_dir(directory: Path, cert_pem: bytes, system: Path | None) -> Path:
    """Bring `directory` up to date: our CA under its hash, links to the system's entries.

    Updated in place (a jailed tool may be reading it): missing links are added, links
    that no longer resolve are removed. Returns `directory`. Blocking file I/O.
    """
    directory.mkdir(mode=0o755, exist_ok=True)
    system_names: set[str] = set()
    if system is not None:
        system_names = {n for n in os.listdir(system) if _HASHED.match(n)}
        for name in system_names:
            link = directory / name
            if not link.is_symlink() and not link.exists():
                link.symlink_to(system / name)
    for entry in directory.iterdir():
        if entry.is_symlink() and not entry.exists():
            entry.unlink()
    ours = _entry_holding(directory, cert_pem, system_names) or _free_entry(directory, cert_pem, system_names)
    if ours.is_symlink():
        ours.unlink()
    if not ours.is_file() or ours.read_bytes() != cert_pem:
        tmp = directory / f".{ours.name}.{os.getpid()}.tmp"
        tmp.write_bytes(cert_pem)
        os.replace(tmp, ours)
    return directory


def _entry_holding(directory: Path, cert_pem: bytes, taken: set[str]) -> Path | None:
    """Where an earlier run put our CA, if it is still the right place: a file (not a
    link) with exactly its bytes, at the first index its hash has free. (OpenSSL tries
    `<hash>.0`, `.1`, ... and stops at the first missing one: a system entry that was
    under `.0` when ours went to `.1` may be gone.)"""
    with os.scandir(directory) as entries:
        for entry in entries:
            if (_HASHED.match(entry.name) and entry.is_file(follow_symlinks=False)
                    and Path(entry.path).read_bytes() == cert_pem):
                digest = entry.name.split(".")[0]
                return Path(entry.path) if entry.name == _first_free(digest, taken) else None
    return None


def _first_free(digest: str, taken: set[str]) -> str:
    index = 0
    while f"{digest}.{index}" in taken:
        index += 1
    return f"{digest}.{index}"


def _free_entry(directory: Path, cert_pem: bytes, taken: set[str]) -> Path:
    """Ours takes the first free index after the system's entries for the same hash."""
    return directory / _first_free(subject_hash(cert_pem), taken)
