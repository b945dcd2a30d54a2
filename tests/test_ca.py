"""The interception CA (ca.py): made once, stored with safe modes, reused, shared safely."""

from __future__ import annotations

import datetime
import multiprocessing
import os
import pwd
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from httpjail_py.ca import CaFiles, ensure_ca, store_dir, system_ca_file

CHILD_ENV_VARS = {
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "DENO_CERT",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO",
    "HTTPJAIL_CA_CERT",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh XDG_CONFIG_HOME, and no sudo or CA variables from the caller."""
    for name in ("SUDO_UID", "SUDO_USER", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(ca: CaFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    key = serialization.load_pem_private_key(ca.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def assert_pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    cert.verify_directly_issued_by(cert)  # self-signed with that key


def test_first_use_creates_a_ten_year_p256_ca(home: Path) -> None:
    ca = ensure_ca()
    assert ca.directory == home / "httpjail"
    assert ca.cert == home / "httpjail" / "ca-cert.pem"
    assert ca.key == home / "httpjail" / "ca-key.pem"
    assert mode(ca.key) == 0o600
    assert ca.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8

    cert, key = load(ca)
    assert_pair(cert, key)
    assert isinstance(key.curve, ec.SECP256R1)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is True
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now
    lifetime = cert.not_valid_after_utc - now
    assert datetime.timedelta(days=3640) < lifetime <= datetime.timedelta(days=3651)


def test_second_use_reuses_the_same_ca(home: Path) -> None:
    first = ensure_ca()
    cert, key = first.cert.read_bytes(), first.key.read_bytes()
    second = ensure_ca()
    assert second == first
    assert second.cert.read_bytes() == cert
    assert second.key.read_bytes() == key


def test_a_loosened_key_mode_is_tightened(home: Path) -> None:
    ca = ensure_ca()
    os.chmod(ca.key, 0o644)
    ensure_ca()
    assert mode(ca.key) == 0o600


def _race(directory: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    barrier.wait()
    ca = ensure_ca(Path(directory))
    out.put(ca.cert.read_bytes())


def test_concurrent_first_use_ends_with_one_valid_ca(tmp_path: Path) -> None:
    directory = tmp_path / "httpjail"
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(directory), barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    certs = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # Every jail got the CA that is now on disk, and the key on disk belongs to it.
    assert set(certs) == {(directory / "ca-cert.pem").read_bytes()}
    ca = ensure_ca(directory)
    assert_pair(*load(ca))
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_bundle_holds_the_system_cas_and_ours(home: Path) -> None:
    ca = ensure_ca()
    system = system_ca_file()
    assert system is not None
    bundle = ca.bundle.read_bytes()
    ours = ca.cert.read_bytes()
    assert bundle.startswith(system.read_bytes().rstrip(b"\n"))
    assert bundle.endswith(ours)
    begin = b"-----BEGIN CERTIFICATE-----"
    assert bundle.count(begin) == system.read_bytes().count(begin) + 1
    trusted = ssl.create_default_context(cafile=str(ca.bundle)).get_ca_certs()
    subjects = [{rdn[0][0]: rdn[0][1] for rdn in c["subject"]} for c in trusted]
    assert {"commonName": "httpjail CA", "organizationName": "httpjail"} in subjects


def test_bundle_does_not_grow_when_ssl_cert_file_names_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # why: inside a jail SSL_CERT_FILE is our bundle; a nested run must not treat it
    # as "the system store" and append our CA to it again on every run.
    ca = ensure_ca()
    size = ca.bundle.stat().st_size
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.bundle))
    for _ in range(2):
        ensure_ca()
    assert ca.bundle.stat().st_size == size
    assert ca.bundle.read_bytes().count(ca.cert.read_bytes()) == 1


def test_mitmproxy_confdir_holds_key_then_cert_and_mitmproxy_loads_it(home: Path) -> None:
    from mitmproxy.certs import DEFAULT_DHPARAM, CertStore

    ca = ensure_ca()
    combined = ca.mitmproxy_confdir / "mitmproxy-ca.pem"
    assert ca.mitmproxy_confdir == home / "httpjail" / "mitmproxy"
    assert combined.read_bytes() == ca.key.read_bytes() + ca.cert.read_bytes()
    assert mode(combined) == 0o600
    assert (ca.mitmproxy_confdir / "mitmproxy-dhparam.pem").read_bytes() == DEFAULT_DHPARAM

    store = CertStore.from_store(ca.mitmproxy_confdir, "mitmproxy", 2048)
    ours, _ = load(ca)
    assert store.default_ca.fingerprint() == ours.fingerprint(hashes.SHA256())
    leaf = store.get_cert("api.test", [x509.DNSName("api.test")]).cert
    leaf._cert.verify_directly_issued_by(ours)
    # mitmproxy made no CA of its own next to ours.
    assert not (ca.mitmproxy_confdir / "mitmproxy-ca-cert.pem").exists()


def test_child_env_points_every_client_at_our_trust(home: Path) -> None:
    ca = ensure_ca()
    env = ca.child_env()
    assert set(env) == CHILD_ENV_VARS
    assert env["HTTPJAIL_CA_CERT"] == str(ca.cert)
    assert env["SSL_CERT_DIR"] == str(ca.directory / "certs")
    for name in CHILD_ENV_VARS - {"HTTPJAIL_CA_CERT", "SSL_CERT_DIR"}:
        assert env[name] == str(ca.bundle), name
    assert all(Path(v).exists() for v in env.values())


def test_store_dir_follows_xdg_then_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store_dir() == home / "httpjail"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(home.parent / "someone"))
    assert store_dir() == home.parent / "someone" / ".config" / "httpjail"


@pytest.mark.root
def test_under_sudo_the_store_belongs_to_the_invoking_user(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setenv("SUDO_UID", str(nobody.pw_uid))
    # The CA a user trusts must be the same with and without sudo: their own directory.
    assert store_dir() == Path(nobody.pw_dir) / ".config" / "httpjail"

    base = home.parent / "user-home"
    base.mkdir()
    directory = base / ".config" / "httpjail"  # .config does not exist yet
    ensure_ca(directory)
    made = [base / ".config", *directory.rglob("*"), directory / ".lock", directory]
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in made} == {(nobody.pw_uid, nobody.pw_gid)}
    assert base.stat().st_uid == 0  # what existed before is left alone
    # The cert directory links into the system store; those files must stay root's.
    links = [p for p in (directory / "certs").iterdir() if p.is_symlink()]
    assert links and all(p.stat().st_uid == 0 for p in links)
