"""The interception CA: generated once with `cryptography`, stored, reused.

Layout of the store (`$XDG_CONFIG_HOME/httpjail/`, or the invoking user's
`~/.config/httpjail/` under sudo):

    ca-cert.pem                  the CA certificate (public)
    ca-key.pem                   its private key, PKCS8, mode 0600
    ca-bundle.pem                system CAs followed by ours: what jailed tools trust
    mitmproxy/mitmproxy-ca.pem   key + certificate, mode 0600, mitmproxy's confdir
    mitmproxy/mitmproxy-dhparam.pem

Generation holds an exclusive `flock` on `.lock`, and every file is written to a temp
name and renamed, so two jails starting at once end up with one CA and no torn file.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import pwd
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CaFiles", "generate_ca", "store_dir", "ensure_ca", "system_ca_file", "CA_ENV_VARS"]

CA_VALIDITY = datetime.timedelta(days=3650)

# Variables that common TLS clients read for their trust store; each gets the bundle.
CA_ENV_VARS = (
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "DENO_CERT",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO",
)


@dataclass(frozen=True, slots=True)
class CaFiles:
    directory: Path
    cert: Path
    key: Path
    bundle: Path
    mitmproxy_confdir: Path

    def child_env(self) -> dict[str, str]:
        """The variables a jailed process needs to trust our CA (and the system's)."""
        env = {name: str(self.bundle) for name in CA_ENV_VARS}
        env["SSL_CERT_DIR"] = str(self.directory)
        env["HTTPJAIL_CA_CERT"] = str(self.cert)
        return env


def generate_ca(common_name: str = "httpjail CA") -> tuple[bytes, bytes]:
    """Make a new ECDSA P-256 CA. Returns (PKCS8 key PEM, certificate PEM). No I/O."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "httpjail"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _invoking_user() -> pwd.struct_passwd | None:
    """The user who ran `sudo httpjail`, when we are root because of sudo."""
    if os.geteuid() != 0 or not os.environ.get("SUDO_UID", "").isdigit():
        return None
    try:
        return pwd.getpwuid(int(os.environ["SUDO_UID"]))
    except KeyError:
        return None


def store_dir() -> Path:
    """Where the CA lives: `$XDG_CONFIG_HOME/httpjail`, else `~/.config/httpjail`.

    Under sudo it is the invoking user's directory, so the CA a user trusts is the same
    with and without sudo.
    """
    user = _invoking_user()
    if user is not None:
        return Path(user.pw_dir) / ".config" / "httpjail"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "httpjail"


def system_ca_file() -> Path | None:
    """The system's CA bundle, or None when there is none to be found."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi  # mitmproxy depends on it

        return Path(certifi.where())
    except ImportError:
        return None


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _chown_tree(paths: list[Path]) -> None:
    user = _invoking_user()
    if user is None:
        return
    for p in paths:
        os.chown(p, user.pw_uid, user.pw_gid)


def ensure_ca(directory: Path | None = None) -> CaFiles:
    """Load the CA from `directory` (default `store_dir()`), creating it if missing.

    Also (re)writes the trust bundle and mitmproxy's confdir. Blocking file I/O: call it
    before the proxy starts, or in a thread. Raises OSError when the store is not writable.
    """
    from mitmproxy.certs import DEFAULT_DHPARAM  # the constant mitmproxy would write itself

    directory = directory or store_dir()
    confdir = directory / "mitmproxy"
    confdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / "ca-cert.pem", directory / "ca-key.pem"
    bundle_path = directory / "ca-bundle.pem"
    with open(directory / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cert_path.is_file() and key_path.is_file()):
            key_pem, cert_pem = generate_ca()
            _write_atomic(key_path, key_pem, 0o600)
            _write_atomic(cert_path, cert_pem, 0o644)
        key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
        _write_atomic(confdir / "mitmproxy-ca.pem", key_pem + cert_pem, 0o600)
        dhparam = confdir / "mitmproxy-dhparam.pem"
        if not dhparam.is_file():
            _write_atomic(dhparam, DEFAULT_DHPARAM, 0o644)
        system = system_ca_file()
        system_pem = system.read_bytes() if system else b""
        if system_pem and not system_pem.endswith(b"\n"):
            system_pem += b"\n"
        _write_atomic(bundle_path, system_pem + cert_pem, 0o644)
        _chown_tree(
            [directory, confdir, cert_path, key_path, bundle_path]
            + sorted(confdir.iterdir())
        )
    return CaFiles(directory, cert_path, key_path, bundle_path, confdir)
