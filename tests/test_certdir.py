"""The CA directory in OpenSSL's hashed layout (httpjail_py/certdir.py), checked with
OpenSSL itself: a client that reads only SSL_CERT_DIR must find our CA there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from httpjail_py.ca import generate_ca
from httpjail_py.certdir import subject_hash, write_cert_dir

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def found_by_openssl(directory: Path, cert: Path) -> bool:
    result = subprocess.run(["openssl", "verify", "-no-CAfile", "-CApath", str(directory), str(cert)],
                            capture_output=True, text=True)
    return result.returncode == 0


def test_our_ca_is_found_next_to_the_systems(tmp_path: Path) -> None:
    _, ours = generate_ca()
    _, theirs = generate_ca("some system CA")
    system = tmp_path / "system"
    system.mkdir()
    (system / f"{subject_hash(theirs)}.0").write_bytes(theirs)
    (tmp_path / "ours.pem").write_bytes(ours)
    (tmp_path / "theirs.pem").write_bytes(theirs)
    directory = write_cert_dir(tmp_path / "certs", ours, system)
    assert found_by_openssl(directory, tmp_path / "ours.pem")
    assert found_by_openssl(directory, tmp_path / "theirs.pem")
    assert write_cert_dir(directory, ours, system) == directory  # a second run changes nothing
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [f"{subject_hash(ours)}.0", f"{subject_hash(theirs)}.0"])


def test_our_ca_moves_back_when_the_system_entry_it_made_way_for_is_gone(tmp_path: Path) -> None:
    # Another certificate with the same subject (ours, installed system-wide, say) takes
    # <hash>.0, so ours goes to <hash>.1. Once that one is gone, ours must be at .0 again:
    # OpenSSL stops at the first missing index.
    _, ours = generate_ca()
    _, same_subject = generate_ca()
    system = tmp_path / "system"
    system.mkdir()
    digest = subject_hash(ours)
    (system / f"{digest}.0").write_bytes(same_subject)
    (tmp_path / "ours.pem").write_bytes(ours)
    directory = write_cert_dir(tmp_path / "certs", ours, system)
    assert (directory / f"{digest}.1").read_bytes() == ours
    (system / f"{digest}.0").unlink()
    write_cert_dir(directory, ours, system)
    assert (directory / f"{digest}.0").read_bytes() == ours
    assert found_by_openssl(directory, tmp_path / "ours.pem")
