"""The interception CA: generated once with `cryptography`, stored, reused.

Layout of the store (`$XDG_CONFIG_HOME/httpjail/`, or the invoking user's
`~/.config/httpjail/` under sudo):

    ca-cert.pem                  the CA certificate (public)
    ca-key.pem                   its private key, PKCS8, mode 0600
    ca-bundle.pem                system CAs followed by ours: what jailed tools trust
    mitmproxy/mitmproxy-ca.pem   key + certificate, mode 0600, mitmproxy's confdir
    mitmproxy/mitmproxy-dhparam.pem
    certs/                       SSL_CERT_DIR: ours + links to the system CAs, by hash

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

from httpjail_py.certdir import system_cert_dir, write_cert_dir

__all__ = [
    "CaFiles", "generate_ca", "store_dir", "ensure_ca", "invoking_user", "system_ca_file", "CA_ENV_VARS",
]

CA_VALIDITY = datetime.timedelta(days=3650)

# mitmproxy's own default (`mitmproxy.certs.DEFAULT_DHPARAM`, 4096-bit MODP), copied so
# that only httpjail_py/proxy imports mitmproxy. We write it under the lock: mitmproxy
# would write it on first load, non-atomically, racing another jail that reads it.
_DHPARAM = b"""
-----BEGIN DH PARAMETERS-----
MIICCAKCAgEAyT6LzpwVFS3gryIo29J5icvgxCnCebcdSe/NHMkD8dKJf8suFCg3
O2+dguLakSVif/t6dhImxInJk230HmfC8q93hdcg/j8rLGJYDKu3ik6H//BAHKIv
j5O9yjU3rXCfmVJQic2Nne39sg3CreAepEts2TvYHhVv3TEAzEqCtOuTjgDv0ntJ
Gwpj+BJBRQGG9NvprX1YGJ7WOFBP/hWU7d6tgvE6Xa7T/u9QIKpYHMIkcN/l3ZFB
chZEqVlyrcngtSXCROTPcDOQ6Q8QzhaBJS+Z6rcsd7X+haiQqvoFcmaJ08Ks6LQC
ZIL2EtYJw8V8z7C0igVEBIADZBI6OTbuuhDwRw//zU1uq52Oc48CIZlGxTYG/Evq
o9EWAXUYVzWkDSTeBH1r4z/qLPE2cnhtMxbFxuvK53jGB0emy2y1Ei6IhKshJ5qX
IB/aE7SSHyQ3MDHHkCmQJCsOd4Mo26YX61NZ+n501XjqpCBQ2+DfZCBh8Va2wDyv
A2Ryg9SUz8j0AXViRNMJgJrr446yro/FuJZwnQcO3WQnXeqSBnURqKjmqkeFP+d8
6mk2tqJaY507lRNqtGlLnj7f5RNoBFJDCLBNurVgfvq9TCVWKDIFD4vZRjCrnl6I
rD693XKIHUCWOjMh1if6omGXKHH40QuME2gNa50+YPn1iYDl88uDbbMCAQI=
-----END DH PARAMETERS-----
"""

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
    cert_dir: Path

    def child_env(self) -> dict[str, str]:
        """The variables a jailed process needs to trust our CA (and the system's)."""
        env = {name: str(self.bundle) for name in CA_ENV_VARS}
        env["SSL_CERT_DIR"] = str(self.cert_dir)
        env["HTTPJAIL_CA_CERT"] = str(self.cert)
        return env


def generate_ca(common_name: str = "httpjail CA") -> tuple[bytes, bytes]:
    """Make a new ECDSA P-256 CA. Returns (PKCS8 key PEM, certificate PEM). No I/O."""
    # Imported here, not at the top: they take ~50 ms, and only a first run makes a CA.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

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


def invoking_user() -> pwd.struct_passwd | None:
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
    user = invoking_user()
    if user is not None:
        return Path(user.pw_dir) / ".config" / "httpjail"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "httpjail"


def system_ca_file(*, exclude: Path | None = None) -> Path | None:
    """The system's CA bundle, or None when there is none to be found.

    Never one of our own bundles: inside a jail (or after a user exported it)
    `SSL_CERT_FILE` names `ca-bundle.pem`, and building a new bundle from it would add
    our CA again on every run. `exclude` names one more file to pass over.
    """
    ours = store_dir().resolve()
    skip = exclude.resolve() if exclude else None
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if not candidate or not Path(candidate).is_file():
            continue
        real = Path(candidate).resolve()
        if real != skip and (real.name != "ca-bundle.pem" or not real.is_relative_to(ours)):
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


def _write_if_changed(path: Path, data: bytes, mode: int) -> None:
    """`_write_atomic`, unless `path` holds `data` already: most starts change nothing, and
    each rewrite is a sync to disk."""
    try:
        same = path.read_bytes() == data
    except OSError:
        same = False
    if not same:
        _write_atomic(path, data, mode)
    elif (path.stat().st_mode & 0o7777) != mode:
        os.chmod(path, mode)


def _chown_tree(user: pwd.struct_passwd, paths: list[Path]) -> None:
    for p in paths:
        # lchown: the cert directory holds links into /etc/ssl/certs, which must stay root's.
        os.lchown(p, user.pw_uid, user.pw_gid)


def ensure_ca(directory: Path | None = None) -> CaFiles:
    """Load the CA from `directory` (default `store_dir()`), creating it if missing.

    Also (re)writes the trust bundle and mitmproxy's confdir. Blocking file I/O: call it
    before the proxy starts, or in a thread. Raises OSError when the store is not writable.
    """
    directory = directory or store_dir()
    confdir = directory / "mitmproxy"
    # Under sudo these belong to the invoking user, and so does any parent we make
    # (a root-owned ~/.config would break the user's other programs).
    created = [p for p in (confdir, *confdir.parents) if not p.exists()]
    confdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / "ca-cert.pem", directory / "ca-key.pem"
    bundle_path = directory / "ca-bundle.pem"
    with open(directory / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cert_path.is_file() and key_path.is_file()):
            key_pem, cert_pem = generate_ca()
            _write_atomic(key_path, key_pem, 0o600)
            _write_atomic(cert_path, cert_pem, 0o644)
        if key_path.stat().st_mode & 0o077:  # e.g. copied in by hand
            os.chmod(key_path, 0o600)
        key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
        _write_if_changed(confdir / "mitmproxy-ca.pem", key_pem + cert_pem, 0o600)
        dhparam = confdir / "mitmproxy-dhparam.pem"
        if not dhparam.is_file():
            _write_atomic(dhparam, _DHPARAM, 0o644)
        system = system_ca_file(exclude=bundle_path)
        system_pem = system.read_bytes() if system else b""
        if system_pem and not system_pem.endswith(b"\n"):
            system_pem += b"\n"
        _write_if_changed(bundle_path, system_pem + cert_pem, 0o644)
        cert_dir = write_cert_dir(directory / "certs", cert_pem, system_cert_dir())
        if (user := invoking_user()) is not None:
            _chown_tree(
                user,
                sorted({*created, directory, confdir})
                + [directory / ".lock", cert_path, key_path, bundle_path, cert_dir]
                + sorted(confdir.iterdir())
                + sorted(cert_dir.iterdir())
            )
    return CaFiles(directory, cert_path, key_path, bundle_path, confdir, cert_dir)
