"""The cluster CA's pure pieces: certificates from CSRs, identities, the CA pin, renewal."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from theseus.security import pki
from theseus.security.files import PkiDir
from theseus.security.tls import client_context, server_context


def test_certificate_from_csr_names_holder_and_role_the_server_chose() -> None:
    ca = pki.create_ca("test")
    key = pki.new_key()
    csr = pki.make_csr(key, "node-a", pki.Role.SERVER)  # the requester asks to be a server
    cert = pki.sign_csr(ca, csr, role=pki.Role.AGENT, addresses=["127.0.0.2"], days=90)
    who = pki.identity(cert)
    assert (who.name, who.role) == ("node-a", "agent")
    assert (
        datetime.timedelta(days=89)
        < who.not_after - who.not_before
        <= datetime.timedelta(days=90, hours=1)
    )


def test_a_forged_or_garbled_csr_is_refused() -> None:
    with pytest.raises(pki.PkiError, match="not a PEM certificate request"):
        pki.csr_name(b"hello")
    csr = pki.make_csr(pki.new_key(), "node-a", pki.Role.AGENT)
    tampered = csr.replace(csr[100:104], bytes(reversed(csr[100:104])))
    if tampered != csr:
        with pytest.raises(pki.PkiError):
            pki.csr_name(tampered)


def test_ca_pin_differs_between_cas_and_is_shell_safe() -> None:
    one, two = pki.create_ca("a"), pki.create_ca("b")
    pin = pki.ca_fingerprint(one.cert)
    assert pin == pki.ca_fingerprint(one.cert)
    assert pin != pki.ca_fingerprint(two.cert)
    assert pin.isalnum() and pin.islower() and len(pin) == 52


def test_renewal_is_due_after_the_given_fraction_of_life() -> None:
    ca = pki.create_ca("test")
    cert = pki.issue(ca, name="n", role=pki.Role.AGENT, addresses=[], days=10).cert
    who = pki.identity(cert)
    life = who.not_after - who.not_before
    assert not pki.renewal_due(cert, who.not_before + life * 0.49, 0.5)
    assert pki.renewal_due(cert, who.not_before + life * 0.51, 0.5)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> pki.Identity | None:
    """One TLS handshake over loopback; the client certificate the server saw (None if none)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[pki.Identity | None] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                seen.append(pki.identity_of(x509.load_der_x509_certificate(der)) if der else None)
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname()) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
    finally:
        thread.join(5)
        listener.close()
    return seen[0]


def test_mutual_tls_with_issued_certificates(tmp_path: Path) -> None:
    """The server sees the agent's identity; a client trusting another CA refuses the server;
    the server's address is checked against its certificate."""
    ca = pki.create_ca("test")
    files = PkiDir(tmp_path / "cluster")
    files.write_ca(ca)
    files.write(
        "server",
        pki.issue(ca, name="s1", role=pki.Role.SERVER, addresses=["127.0.0.1"], days=1),
    )
    files.write("agent", pki.issue(ca, name="n1", role=pki.Role.AGENT, addresses=[], days=1))
    assert (files.key("agent").stat().st_mode & 0o077) == 0
    server = server_context(files, "server")

    peer = _handshake(server, client_context(files, "agent"))
    assert peer is not None and (peer.name, peer.role) == ("n1", "agent")
    assert _handshake(server, client_context(files)) is None  # a token holder: no certificate

    other = PkiDir(tmp_path / "other")
    other.write_ca(pki.create_ca("other"))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, client_context(other))

    elsewhere = PkiDir(tmp_path / "elsewhere")
    elsewhere.write_ca(ca)
    elsewhere.write(
        "server",
        pki.issue(ca, name="s2", role=pki.Role.SERVER, addresses=["127.0.0.9"], days=1),
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        _handshake(server_context(elsewhere, "server"), client_context(files))


def test_a_long_cluster_name_still_makes_a_ca() -> None:
    ca = pki.create_ca("x" * 200)
    assert len(pki.identity(ca.cert).name) == 64
