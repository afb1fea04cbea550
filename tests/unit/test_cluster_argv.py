"""Command lines built from ``theseus.cluster.argv``'s descriptions, as the test kit and the
benchmarks start their processes (``theseus up``'s own are in test_cluster_commands.py)."""

from __future__ import annotations

from pathlib import Path

from theseus.cluster.argv import AgentProcess, EtcdMember, EtcdTlsFiles, ServerProcess, etcd_url


def test_a_member_of_three_names_the_others_and_the_token() -> None:
    peers = (("e-1", "http://127.0.0.1:20001"), ("e-2", "http://127.0.0.1:20003"))
    member = EtcdMember(
        "e-2", Path("/d/e-2"), 20002, 20003, initial_cluster=peers, token="t-x", max_txn_ops=64
    )
    argv = member.argv()
    assert argv[argv.index("--initial-cluster") + 1] == (
        "e-1=http://127.0.0.1:20001,e-2=http://127.0.0.1:20003"
    )
    assert argv[argv.index("--initial-cluster-state") + 1] == "new"
    assert argv[argv.index("--initial-cluster-token") + 1] == "t-x"
    assert argv[argv.index("--max-txn-ops") + 1] == "64"
    assert (member.endpoint, member.health_url) == (
        "127.0.0.1:20002",
        "http://127.0.0.1:20002/health",
    )


def test_a_lone_member_forms_its_own_cluster_without_a_token() -> None:
    argv = EtcdMember("solo", Path("/d"), 20010, 20011).argv()
    assert argv[argv.index("--initial-cluster") + 1] == "solo=http://127.0.0.1:20011"
    assert "--initial-cluster-token" not in argv and "--initial-cluster-state" not in argv


def test_server_options_are_passed_only_when_given() -> None:
    plain = ServerProcess(20020, ("127.0.0.1:1", "127.0.0.1:2"), python="/py")
    assert plain.argv() == [
        *("/py", "-m", "theseus", "server", "--host", "127.0.0.1", "--port", "20020"),
        *("--etcd", "127.0.0.1:1", "--etcd", "127.0.0.1:2"),
    ]
    tuned = ServerProcess(
        20020,
        ("127.0.0.1:1",),
        liveness_timeout=4,
        registry_repair_interval=3.0,
        max_request_bytes=1 << 20,
        log_level="warning",
    )
    argv = tuned.argv()
    assert argv[argv.index("--max-request-bytes") + 1] == "1048576"
    assert argv[argv.index("--liveness-timeout") + 1] == "4"
    assert argv[argv.index("--registry-repair-interval") + 1] == "3"
    assert argv[argv.index("--log-level") + 1] == "warning"
    assert tuned.health_url == "http://127.0.0.1:20020/v1/health"


def test_agent_with_every_option() -> None:
    agent = AgentProcess(
        servers=("http://127.0.0.1:1", "http://127.0.0.1:2"),
        name="n-1",
        address="127.0.0.31",
        port=20030,
        state_dir=Path("/s/n-1"),
        driver="docker",
        cpus=1.0,
        mem=2048,
        attributes=(("rack", "r1"), ("zone", "a")),
        python="/py",
    )
    assert agent.argv() == [
        *("/py", "-m", "theseus", "agent", "--server", "http://127.0.0.1:1,http://127.0.0.1:2"),
        *("--name", "n-1", "--address", "127.0.0.31", "--port", "20030", "--driver", "docker"),
        *("--cpus", "1", "--mem", "2048", "--attr", "rack=r1", "--attr", "zone=a"),
        *("--state-dir", "/s/n-1"),
    ]


def test_a_member_with_a_pki_dir_serves_clients_and_peers_over_tls_and_requires_certs() -> None:
    member = EtcdMember("e-1", Path("/d/e-1"), 20040, 20041, pki_dir=Path("/pki"))
    argv = member.argv()

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert member.client_url == "https://127.0.0.1:20040"
    assert member.endpoint == "https://127.0.0.1:20040"
    assert member.health_url == "https://127.0.0.1:20040/health"
    assert value("--listen-client-urls") == value("--advertise-client-urls") == member.client_url
    assert value("--listen-peer-urls") == "https://127.0.0.1:20041"
    assert value("--initial-cluster") == "e-1=https://127.0.0.1:20041"
    assert value("--cert-file") == value("--peer-cert-file") == "/pki/etcd-e-1.pem"
    assert value("--key-file") == value("--peer-key-file") == "/pki/etcd-e-1-key.pem"
    assert value("--trusted-ca-file") == value("--peer-trusted-ca-file") == "/pki/ca.pem"
    assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv


def test_a_member_without_a_pki_dir_has_no_tls_flag() -> None:
    member = EtcdMember("e-1", Path("/d/e-1"), 20040, 20041)
    assert member.tls_files is None
    assert not [a for a in member.argv() if "cert" in a or "trusted-ca" in a]


def test_peers_of_a_tls_cluster_are_named_by_https_urls() -> None:
    assert etcd_url("127.0.0.1", 20041, Path("/pki")) == "https://127.0.0.1:20041"
    assert etcd_url("127.0.0.1", 20041) == "http://127.0.0.1:20041"


def test_a_server_of_a_tls_etcd_gets_the_three_files() -> None:
    files = EtcdTlsFiles(Path("/pki/ca.pem"), Path("/pki/c.pem"), Path("/pki/c-key.pem"))
    server = ServerProcess(20020, ("https://127.0.0.1:1",), python="/py", etcd_tls=files)
    assert server.argv() == [
        *("/py", "-m", "theseus", "server", "--host", "127.0.0.1", "--port", "20020"),
        *("--etcd", "https://127.0.0.1:1", "--etcd-cacert", "/pki/ca.pem"),
        *("--etcd-cert", "/pki/c.pem", "--etcd-key", "/pki/c-key.pem"),
    ]
