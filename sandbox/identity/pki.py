"""The sandbox's own certificate authority for TLS, and the SuperNode authentication keys.

Flower's deployment engine speaks HTTPS between every SuperNode and the SuperLink. The
sandbox issues the SuperLink's server certificate from its own CA (ECDSA P-256, X.509 via
``cryptography``); every node trusts that CA only (``--root-certificates``), so a node never
talks to a SuperLink the sandbox did not certify.

Node authentication is separate from TLS: each company's node holds an ECDSA P-256 key in
OpenSSH format (what Flower's ``--auth-supernode-private-key`` reads), and the SuperLink only
admits nodes whose public key was registered with it. The public half is recorded in the
registry; the private half stays in the company's node folder.

Private keys are written 0600 and never logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from sandbox.files import write_atomic
from sandbox.identity import KeyFileError, check_owner_only, write_secret_file

CA_KEY = "tls-ca.key"
CA_CERT = "tls-ca.crt"
SERVER_KEY = "server.key"
SERVER_CERT = "server.crt"
PUBLIC_CA = "ca.crt"
DEFAULT_HOSTNAMES = ("localhost",)
DEFAULT_IPS = ("127.0.0.1", "::1")
NODE_KEY_TYPE = "ecdsa-sha2-nistp256"
CA_DAYS = 3650
SERVER_DAYS = 825


class PkiError(ValueError):
    """A certificate or key is missing, malformed or of the wrong kind."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_public(path: Path, data: bytes) -> None:
    write_atomic(path, data, 0o644)


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)


def _new_ca(common_name: str) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
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
    return CertificateAuthority(key, cert)


def load_or_create_ca(
    ca_dir: Path, common_name: str = "Regulatory Data Sandbox TLS CA"
) -> CertificateAuthority:
    """The sandbox's CA in ``ca_dir`` (``tls-ca.key`` 0600, ``tls-ca.crt``); created once."""
    key_path, cert_path = ca_dir / CA_KEY, ca_dir / CA_CERT
    if key_path.exists() != cert_path.exists():
        raise PkiError(f"{ca_dir} holds only half of the CA ({CA_KEY} and {CA_CERT} go together)")
    if key_path.exists():
        check_owner_only(key_path)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key_path} is not an EC private key")
        if cert.public_key() != key.public_key():
            raise PkiError(f"{cert_path} does not belong to {key_path}")
        return CertificateAuthority(key, cert)
    ca = _new_ca(common_name)
    write_secret_file(key_path, _pem_key(ca.key))
    _write_public(cert_path, ca.cert_pem)
    return ca


def issue_server_certificate(
    ca: CertificateAuthority,
    hostnames: Iterable[str] = DEFAULT_HOSTNAMES,
    ips: Iterable[str] = DEFAULT_IPS,
    days: int = SERVER_DAYS,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS server certificate for the SuperLink, valid for each hostname and IP address."""
    names = list(dict.fromkeys(h.strip() for h in hostnames if h.strip()))
    addresses = [ipaddress.ip_address(ip) for ip in dict.fromkeys(ips)]
    if not names and not addresses:
        raise PkiError("a server certificate needs at least one hostname or IP address")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san += [x509.IPAddress(a) for a in addresses]
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else str(addresses[0]))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return key, cert


@dataclass(frozen=True)
class ServerTls:
    """Where the SuperLink's TLS files are: its key and certificate, and the CA's certificate."""

    folder: Path

    @property
    def key(self) -> Path:
        return self.folder / SERVER_KEY

    @property
    def cert(self) -> Path:
        return self.folder / SERVER_CERT

    @property
    def ca_cert(self) -> Path:
        return self.folder / PUBLIC_CA

    def exists(self) -> bool:
        return self.key.exists() and self.cert.exists() and self.ca_cert.exists()

    def names(self) -> set[str]:
        """The hostnames and IP addresses the certificate is valid for."""
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {str(n) for n in san.get_values_for_type(x509.DNSName)} | {
            str(a) for a in san.get_values_for_type(x509.IPAddress)
        }


def write_server_tls(
    ca: CertificateAuthority,
    folder: Path,
    hostnames: Iterable[str] = DEFAULT_HOSTNAMES,
    ips: Iterable[str] = DEFAULT_IPS,
) -> ServerTls:
    """Issue the SuperLink's certificate into ``folder`` (``server.key`` 0600, ``server.crt``,
    and ``ca.crt``, the CA's certificate, so the folder is all the SuperLink needs)."""
    key, cert = issue_server_certificate(ca, hostnames, ips)
    tls = ServerTls(folder)
    write_secret_file(tls.key, _pem_key(key))
    _write_public(tls.cert, _cert_pem(cert))
    _write_public(tls.ca_cert, ca.cert_pem)
    return tls


def write_public_ca(ca: CertificateAuthority, folder: Path) -> Path:
    """Only the CA's certificate (what a node or a CLI needs to trust the SuperLink)."""
    path = folder / PUBLIC_CA
    _write_public(path, ca.cert_pem)
    return path


def verify_server_certificate(ca_cert_pem: bytes, server_cert_pem: bytes, hostname: str) -> None:
    """Raise when ``server_cert_pem`` was not issued by the CA or does not name ``hostname``."""
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    leaf, *chain = x509.load_pem_x509_certificates(server_cert_pem)
    try:
        try:
            subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(hostname))
        except ValueError:
            subject = x509.DNSName(hostname)
        verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(subject)
        verifier.verify(leaf, chain)
    except VerificationError as exc:
        raise PkiError(f"the server certificate does not verify for {hostname}: {exc}") from exc


# ----------------------------------------------------------------- node authentication
def _public_line(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")


def generate_node_auth_key(private_path: Path, comment: str) -> str:
    """A new SuperNode authentication key: the private key in OpenSSH format (0600) at
    ``private_path``, the public line at ``<private_path>.pub``. Returns the public line."""
    if private_path.exists():
        raise FileExistsError(f"{private_path} already exists; a node key is never overwritten")
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    write_secret_file(private_path, private)
    public = _public_line(key.public_key())
    _write_public(public_key_path(private_path), f"{public} {comment}\n".encode())
    return public


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def normalise_node_public_key(text: str) -> str:
    """The ``ecdsa-sha2-nistp256 AAAA...`` part of an OpenSSH public key line (no comment),
    after checking that it is a P-256 key, the kind Flower's node authentication takes."""
    parts = text.strip().split()
    if len(parts) < 2 or parts[0] != NODE_KEY_TYPE:
        raise PkiError(f"a node key is an OpenSSH '{NODE_KEY_TYPE}' public key line")
    line = f"{parts[0]} {parts[1]}"
    try:
        key = serialization.load_ssh_public_key(line.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise PkiError("the node key is not a valid OpenSSH public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise PkiError("a node key must be ECDSA on P-256")
    return line


def node_key_fingerprint(public_line: str) -> str:
    """``SHA256:<base64>`` of the key blob, as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(normalise_node_public_key(public_line).split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def read_node_private_key_public_line(private_path: Path) -> str:
    """The public line of the node key at ``private_path`` (refuses a key others can read)."""
    check_owner_only(private_path)
    try:
        key = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    except (ValueError, OSError) as exc:
        raise KeyFileError(f"{private_path} is not an OpenSSH private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyFileError(f"{private_path} is not an ECDSA P-256 key")
    return _public_line(key.public_key())
