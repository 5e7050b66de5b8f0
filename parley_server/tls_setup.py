"""The server's TLS certificate: made on first start (self-signed, EC P-256) or given with
--tls-cert/--tls-key, loaded into an SSLContext, and identified by its SHA-256 fingerprint.

Clients pin that fingerprint (trust on first use), so the certificate needs no CA and no
matching host name; what matters is that it stays the same across restarts, hence it lives in
the data dir: data_dir/tls/cert.pem and key.pem (the key readable by the owner only).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from parley_common.tlsbio import pem_fingerprint

log = logging.getLogger("parley.tls")

CERT_NAME, KEY_NAME = "cert.pem", "key.pem"
VALID_DAYS = 3650  # nobody checks expiry (the pin is what counts); ten years avoids surprises


class TLSSetupError(Exception):
    pass


@dataclass
class ServerTLS:
    context: ssl.SSLContext
    fingerprint: str       # 64 lowercase hex digits
    cert_path: Path
    key_path: Path
    generated: bool        # made during this start
    # Made during this start for a server that had run before (its database was there):
    # every client that pinned the old fingerprint will now refuse to connect until its
    # user accepts the new one, so the operator must hear about it.
    replaced: bool = False


def load_server_tls(tls: bool, data_dir: Path, cert: Path | None = None,
                    key: Path | None = None) -> ServerTLS | None:
    """None when TLS is off; else the context, generating a certificate if none exists yet."""
    if not tls:
        return None
    generated = replaced = False
    if cert is None and key is None:
        folder = data_dir / "tls"
        cert, key = folder / CERT_NAME, folder / KEY_NAME
        if cert.exists() != key.exists():
            there, gone = (cert, key) if cert.exists() else (key, cert)
            raise TLSSetupError(
                f"{gone} is missing but {there} is still there, so this server's identity "
                f"is half gone. Restore {gone.name} from a backup to keep the identity clients "
                f"know. Or, to make a new certificate, move {there} aside too: then every "
                "client that connected before warns that the server's identity changed, and "
                "each person has to accept the new fingerprint.")
        if not cert.exists():
            replaced = (data_dir / "parley.sqlite3").exists()
            try:
                generate_self_signed(cert, key)
            except OSError as exc:
                raise TLSSetupError(f"cannot write a TLS certificate in {folder}: {exc}") \
                    from exc
            generated = True
    elif cert is None or key is None:
        raise TLSSetupError("give both --tls-cert and --tls-key")
    try:
        pem = cert.read_text(encoding="ascii")
        fingerprint = pem_fingerprint(pem)
        context = server_context(cert, key)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise TLSSetupError(f"cannot use the certificate {cert} / key {key}: {exc}") from exc
    return ServerTLS(context, fingerprint, cert, key, generated, replaced)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    # Session tickets only help resumption, which a long-lived chat connection does not need;
    # without them the server sends nothing unasked after the handshake.
    ctx.num_tickets = 0
    return ctx


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str | None = None) -> None:
    """Write a new self-signed certificate and key (0600). Uses the `cryptography` package,
    or the `openssl` command when that package is missing."""
    hostname = hostname or socket.gethostname() or "parley"
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        cert_pem, key_pem = _generate_with_cryptography(hostname)
    except ImportError:
        cert_pem, key_pem = _generate_with_openssl(hostname, cert_path.parent)
    _write_private(key_path, key_pem)
    tmp = cert_path.with_name(cert_path.name + ".tmp")
    tmp.write_bytes(cert_pem)
    os.replace(tmp, cert_path)
    log.info("created a TLS certificate in %s", cert_path.parent)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)  # in case the file existed with wider permissions
    os.replace(tmp, path)


def _generate_with_cryptography(hostname: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Parley server")])
    alt: list[x509.GeneralName] = [x509.DNSName(hostname)] if _is_dns_name(hostname) else []
    alt += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _generate_with_openssl(hostname: str, folder: Path) -> tuple[bytes, bytes]:
    exe = shutil.which("openssl")
    if exe is None:
        raise TLSSetupError("cannot create a TLS certificate: install the `cryptography` "
                            "package, or give --tls-cert/--tls-key, or run with --no-tls")
    cert_tmp, key_tmp = folder / "new-cert.pem", folder / "new-key.pem"
    cn = hostname if _is_dns_name(hostname) else "parley"
    try:
        subprocess.run([exe, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-sha256",
                        "-days", str(VALID_DAYS), "-subj", f"/CN={cn}/O=Parley server",
                        "-keyout", str(key_tmp), "-out", str(cert_tmp)],
                       check=True, capture_output=True, timeout=60)
        return cert_tmp.read_bytes(), key_tmp.read_bytes()
    except (OSError, subprocess.SubprocessError) as exc:
        raise TLSSetupError(f"openssl could not create a certificate: {exc}") from exc
    finally:
        for p in (cert_tmp, key_tmp):
            p.unlink(missing_ok=True)


def _is_dns_name(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return all(0 < len(p) <= 63 and p.replace("-", "").isalnum() and p.isascii()
               for p in labels) and len(name) <= 253
