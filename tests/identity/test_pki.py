"""The sandbox's TLS CA and the SuperNode authentication keys."""

from __future__ import annotations

import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sandbox.identity import KeyFileError, pki


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_is_created_once_with_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    ca = pki.load_or_create_ca(tmp_path / "keys")
    assert mode(tmp_path / "keys" / pki.CA_KEY) == 0o600
    again = pki.load_or_create_ca(tmp_path / "keys")
    assert again.cert == ca.cert
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    (tmp_path / "keys" / pki.CA_KEY).chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        pki.load_or_create_ca(tmp_path / "keys")


def test_half_a_ca_is_refused(tmp_path: Path) -> None:
    pki.load_or_create_ca(tmp_path)
    (tmp_path / pki.CA_CERT).unlink()
    with pytest.raises(pki.PkiError, match="half"):
        pki.load_or_create_ca(tmp_path)


def test_the_server_certificate_names_loopback_and_extra_hostnames(tmp_path: Path) -> None:
    ca = pki.load_or_create_ca(tmp_path / "ca")
    tls = pki.write_server_tls(ca, tmp_path / "tls", hostnames=("localhost", "superlink"))
    assert tls.exists() and mode(tls.key) == 0o600
    assert tls.names() == {"localhost", "superlink", "127.0.0.1", "::1"}
    for name in ("127.0.0.1", "::1", "localhost", "superlink"):
        pki.verify_server_certificate(ca.cert_pem, tls.cert.read_bytes(), name)
    with pytest.raises(pki.PkiError, match="does not verify"):
        pki.verify_server_certificate(ca.cert_pem, tls.cert.read_bytes(), "elsewhere.example")
    other = pki.load_or_create_ca(tmp_path / "other")
    with pytest.raises(pki.PkiError):
        pki.verify_server_certificate(other.cert_pem, tls.cert.read_bytes(), "localhost")
    # Python's own TLS stack accepts the pair as a server identity.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)


def test_openssl_verifies_the_chain(tmp_path: Path) -> None:
    ca = pki.load_or_create_ca(tmp_path / "ca")
    tls = pki.write_server_tls(ca, tmp_path / "tls")
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tls.ca_cert), str(tls.cert)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr


def test_a_node_key_is_p256_in_openssh_format_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node-auth.key"
    public = pki.generate_node_auth_key(path, "acme")
    assert mode(path) == 0o600
    assert public.startswith("ecdsa-sha2-nistp256 ")
    assert pki.public_key_path(path).read_text().strip() == f"{public} acme"
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert pki.read_node_private_key_public_line(path) == public
    assert pki.normalise_node_public_key(f"{public} a comment") == public
    assert pki.node_key_fingerprint(public).startswith("SHA256:")
    with pytest.raises(FileExistsError):
        pki.generate_node_auth_key(path, "acme")
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="readable by others"):
        pki.read_node_private_key_public_line(path)


def test_keys_of_another_kind_are_not_node_keys() -> None:
    ed = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    for text in (ed, p384, "ecdsa-sha2-nistp256 AAAAnot-base64", "", "garbage"):
        with pytest.raises(pki.PkiError):
            pki.normalise_node_public_key(text)
