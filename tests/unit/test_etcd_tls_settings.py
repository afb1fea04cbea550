"""etcd TLS settings without an etcd: which endpoints use TLS, the credentials' files and
repr, the certificates the launcher issues, and ``theseus server``'s TLS flags. Against a real
etcd: tests/integration/test_etcd_tls.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from theseus.cli.main import app
from theseus.cluster.argv import EtcdMember
from theseus.cluster.certs import ETCD_CLIENT, issue_client_cert, issue_etcd_certs
from theseus.security.files import PkiDir
from theseus.security.pki import create_ca, identity, load_cert
from theseus.store.etcd import EtcdStore
from theseus.store.etcd_tls import Endpoint, EtcdTls, EtcdTlsError, parse_endpoint

TLS = EtcdTls(b"-----BEGIN CA", b"-----BEGIN CERT", b"-----BEGIN PRIVATE KEY secret")


@pytest.mark.parametrize(
    ("endpoint", "tls", "expected"),
    [
        ("127.0.0.1:2379", None, Endpoint("127.0.0.1", 2379, False)),
        ("http://127.0.0.1:2379", None, Endpoint("127.0.0.1", 2379, False)),
        ("https://127.0.0.1:2379", TLS, Endpoint("127.0.0.1", 2379, True)),
        ("127.0.0.1:2379", TLS, Endpoint("127.0.0.1", 2379, True)),
        ("https://etcd.example", TLS, Endpoint("etcd.example", 2379, True)),
        ("https://[::1]:2380/", TLS, Endpoint("::1", 2380, True)),
    ],
)
def test_which_endpoints_use_tls(endpoint: str, tls: EtcdTls | None, expected: Endpoint) -> None:
    assert parse_endpoint(endpoint, tls) == expected


def test_an_https_endpoint_without_credentials_is_refused_at_once() -> None:
    with pytest.raises(EtcdTlsError, match="--etcd-cacert"):
        EtcdStore(["https://127.0.0.1:2379"])


def test_credentials_for_a_plain_http_endpoint_are_refused() -> None:
    with pytest.raises(EtcdTlsError, match="plain http"):
        EtcdStore(["http://127.0.0.1:2379"], tls=TLS)


def test_the_key_never_shows_in_a_repr() -> None:
    assert "secret" not in repr(TLS) and "PRIVATE" not in repr(TLS)


def test_an_unreadable_or_non_pem_file_is_named_without_its_contents(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(b"not pem: hunter2")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----")
    with pytest.raises(EtcdTlsError) as missing:
        EtcdTls.from_files(tmp_path / "nope.pem", ca, key)
    assert "nope.pem" in str(missing.value)
    with pytest.raises(EtcdTlsError) as garbage:
        EtcdTls.from_files(ca, ca, key)
    assert "key.pem" in str(garbage.value) and "hunter2" not in str(garbage.value)


def test_the_launcher_issues_each_member_a_certificate_for_its_host_and_one_client_cert(
    tmp_path: Path,
) -> None:
    pki = PkiDir(tmp_path / "pki")
    pki.write_ca(create_ca("c"))
    members = [
        EtcdMember(f"e-{i}", tmp_path / f"e-{i}", 1000 + i, 2000 + i, host=f"127.0.0.{i}")
        for i in (1, 2)
    ]
    files = issue_etcd_certs(pki, members)
    assert set(files) == {"e-1", "e-2"}
    cert = load_cert(files["e-2"].cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.2")]
    assert identity(files["e-2"].cert.read_bytes())[:2] == ("etcd-e-2", "etcd")
    client = issue_client_cert(pki)
    assert identity(client.cert.read_bytes())[:2] == (ETCD_CLIENT, "client")
    assert client.key.stat().st_mode & 0o077 == 0
    # Again: what is there is kept.
    before = files["e-1"].cert.read_bytes()
    assert issue_etcd_certs(pki, members)["e-1"].cert.read_bytes() == before


def test_the_server_wants_all_three_tls_files_or_none(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----")
    runner = CliRunner()
    partial = runner.invoke(app, ["server", "--etcd-cacert", str(ca)])
    assert partial.exit_code != 0 and "--etcd-key" in partial.output
    https = runner.invoke(app, ["server", "--etcd", "https://127.0.0.1:2379"])
    assert https.exit_code != 0 and "--etcd-cacert" in https.output
