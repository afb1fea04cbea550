"""guestutils: maestro-ng's names and semantics, answered from a fake agent's registry."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.fake_agent import FakeAgent, entry, group
from theseus import guestutils
from theseus.guestutils import MaestroEnvironmentError

MAESTRO_NAMES = {
    "MaestroEnvironmentError",
    "update_os_env",
    "get_environment_name",
    "get_service_name",
    "get_container_name",
    "get_container_host_address",
    "get_container_internal_address",
    "get_port",
    "get_specific_host",
    "get_specific_port",
    "get_specific_exposed_port",
    "get_node_list",
}
SOURCES = Path(guestutils.__file__).parent


@pytest.fixture(params=["unix", "tcp"])
def agent(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeAgent]:
    """A fake agent with three services, reached the way the parameter says."""
    fake = FakeAgent(str(tmp_path / "agent.sock") if request.param == "unix" else None)
    fake.set_groups(
        "web",
        [
            group(
                ["dev"],
                entry(
                    "web", "web.c", "10.0.0.3", ["dev"], {"api": (31003, 5000), "ssh": (31013, 22)}
                ),
            ),
            group(
                ["dev", "frontend"],
                entry("web", "web.a", "10.0.0.1", ["dev", "frontend"], {"api": (31001, 5000)}),
                entry("web", "web.b", "10.0.0.2", ["dev", "frontend"], {"api": (31002, 5000)}),
            ),
            group(["prod"], entry("web", "web.d", "10.0.0.4", ["prod"], {"api": (31004, 5000)})),
        ],
    )
    fake.start()
    monkeypatch.setenv("THESEUS_DISCOVERY", fake.address)
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SERVICE_NAME", "CONTAINER_NAME", "CONTAINER_HOST_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MAESTRO_ENVIRONMENT_NAME", raising=False)
    monkeypatch.setenv("THESEUS_DISCOVERY", "http://127.0.0.1:9")  # nothing listens there


# --- exports ----------------------------------------------------------------------------------


def test_star_import_gives_exactly_maestros_names() -> None:
    assert set(guestutils.__all__) == MAESTRO_NAMES
    namespace: dict[str, object] = {}
    exec("from theseus.guestutils import *", namespace)
    assert set(namespace) - {"__builtins__"} == MAESTRO_NAMES


# --- this container: the environment ----------------------------------------------------------


def test_environment_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert guestutils.get_environment_name() == "local"
    monkeypatch.setenv("MAESTRO_ENVIRONMENT_NAME", "default")
    assert guestutils.get_environment_name() == "default"


@pytest.mark.parametrize(
    ("function", "variable", "message"),
    [
        (guestutils.get_service_name, "SERVICE_NAME", "Service name was not defined"),
        (guestutils.get_container_name, "CONTAINER_NAME", "Container name was not defined"),
        (
            guestutils.get_container_host_address,
            "CONTAINER_HOST_ADDRESS",
            "Container host address was not defined",
        ),
    ],
)
def test_own_names_and_maestros_errors(
    monkeypatch: pytest.MonkeyPatch, function: object, variable: str, message: str
) -> None:
    assert callable(function)
    with pytest.raises(MaestroEnvironmentError, match=f"^{message}$"):
        function()
    monkeypatch.setenv(variable, "")
    with pytest.raises(MaestroEnvironmentError, match=f"^{message}$"):
        function()
    monkeypatch.setenv(variable, "web.abc123")
    assert function() == "web.abc123"


def test_host_address_as_ip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_HOST_ADDRESS", "10.1.2.3")
    assert guestutils.get_container_host_address(as_ip_address=True) == "10.1.2.3"
    monkeypatch.setenv("CONTAINER_HOST_ADDRESS", "localhost")
    assert guestutils.get_container_host_address() == "localhost"
    assert ipaddress.ip_address(guestutils.get_container_host_address(True)).is_loopback
    monkeypatch.setenv("CONTAINER_HOST_ADDRESS", "")
    assert guestutils.get_container_host_address(as_ip_address=True) == "0.0.0.0"  # maestro quirk
    with pytest.raises(MaestroEnvironmentError):
        guestutils.get_container_host_address()


def test_update_os_env(monkeypatch: pytest.MonkeyPatch) -> None:
    before = dict(os.environ)
    guestutils.update_os_env(None)
    guestutils.update_os_env()
    assert dict(os.environ) == before
    monkeypatch.delenv("GUEST_TEST_VAR", raising=False)
    guestutils.update_os_env({"GUEST_TEST_VAR": "x"})
    assert os.environ.pop("GUEST_TEST_VAR") == "x"


def test_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABELS", raising=False)
    assert guestutils.get_labels() == []
    monkeypatch.setenv("LABELS", '["dev", "frontend"]')
    assert guestutils.get_labels() == ["dev", "frontend"]
    monkeypatch.setenv("LABELS", "dev")
    with pytest.raises(MaestroEnvironmentError):
        guestutils.get_labels()


def test_internal_address_is_an_ip() -> None:
    ipaddress.ip_address(guestutils.get_container_internal_address())


def test_internal_address_falls_back_to_the_route_towards_the_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unresolvable(name: str) -> str:
        raise socket.gaierror("no such host")

    monkeypatch.setattr(socket, "gethostbyname", unresolvable)
    monkeypatch.setenv("CONTAINER_HOST_ADDRESS", "127.0.0.1")
    assert guestutils.get_container_internal_address() == "127.0.0.1"
    monkeypatch.delenv("CONTAINER_HOST_ADDRESS")
    with pytest.raises(MaestroEnvironmentError, match="could not be determined"):
        guestutils.get_container_internal_address()


# --- get_port: this container's own maestro variable ------------------------------------------


def test_get_port_reads_the_self_variable_without_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVICE_NAME", "zk")
    monkeypatch.setenv("CONTAINER_NAME", "zk-node.1")
    monkeypatch.setenv("ZK_ZK_NODE_1_CLIENT_INTERNAL_PORT", "2181")
    monkeypatch.setenv("ZK_ZK_NODE_1_CLIENT_PORT", "31000")
    monkeypatch.setenv("ZK_ZK_NODE_1_PEER_LINK_INTERNAL_PORT", "2888")
    assert guestutils.get_port("client") == 2181  # the exposed port, an int; no agent needed
    assert guestutils.get_port("peer-link") == 2888
    assert guestutils.get_port("client", 7) == 2181


def test_get_port_transliterates_non_ascii_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_NAME", "café")
    monkeypatch.setenv("CONTAINER_NAME", "café.x-1")
    monkeypatch.setenv("CAFÉ_CAFÉ_X_1_API_INTERNAL_PORT", "5000")
    assert guestutils.get_port("api") == 5000


def test_get_port_defaults_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MaestroEnvironmentError, match="^Service name was not defined$"):
        guestutils.get_port("api", 1)
    monkeypatch.setenv("SERVICE_NAME", "web")
    monkeypatch.setenv("CONTAINER_NAME", "web.1")
    assert guestutils.get_port("jmx", "42") == 42
    assert guestutils.get_port("jmx", -1) == -1
    message = "^No internal port jmx defined for container web.1 of service web$"
    with pytest.raises(MaestroEnvironmentError, match=message):
        guestutils.get_port("jmx")
    with pytest.raises(MaestroEnvironmentError, match=message):
        guestutils.get_port("jmx", "default")
    monkeypatch.setenv("WEB_WEB_1_JMX_INTERNAL_PORT", "abc")
    with pytest.raises(MaestroEnvironmentError, match=message):
        guestutils.get_port("jmx", 42)  # a set value wins over the default, even a bad one
    monkeypatch.setenv("WEB_WEB_1_JMX_INTERNAL_PORT", "")
    with pytest.raises(MaestroEnvironmentError, match=message):
        guestutils.get_port("jmx", 42)


# --- other containers: the registry -----------------------------------------------------------


def test_specific_lookups_find_containers_in_multi_label_groups(agent: FakeAgent) -> None:
    assert guestutils.get_specific_host("web", "web.b") == "10.0.0.2"
    assert guestutils.get_specific_port("web", "web.b", "api") == 31002
    assert guestutils.get_specific_exposed_port("web", "web.b", "api") == 5000
    assert guestutils.get_specific_port("web", "web.c", "ssh") == 31013
    assert guestutils.get_specific_exposed_port("web", "web.c", "ssh") == 22


def test_specific_lookups_errors_and_defaults(agent: FakeAgent) -> None:
    with pytest.raises(
        MaestroEnvironmentError, match="^No host defined for container x of service web$"
    ):
        guestutils.get_specific_host("web", "x")
    with pytest.raises(
        MaestroEnvironmentError, match="^No port ssh defined for container web.a of service web$"
    ):
        guestutils.get_specific_port("web", "web.a", "ssh")
    with pytest.raises(
        MaestroEnvironmentError,
        match="^No internal port ssh defined for container web.a of service web$",
    ):
        guestutils.get_specific_exposed_port("web", "web.a", "ssh")
    assert guestutils.get_specific_port("web", "web.a", "ssh", "2222") == 2222
    assert guestutils.get_specific_exposed_port("web", "web.a", "ssh", 22) == 22
    assert guestutils.get_specific_port("nope", "x", "api", 80) == 80
    with pytest.raises(
        MaestroEnvironmentError, match="^No port api defined for container x of service nope$"
    ):
        guestutils.get_specific_port("nope", "x", "api")


def test_get_port_self_lookup_matches_the_registry(
    agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_NAME", "web")
    monkeypatch.setenv("CONTAINER_NAME", "web.a")
    monkeypatch.setenv("WEB_WEB_A_API_INTERNAL_PORT", "5000")
    own = guestutils.get_container_name()
    assert guestutils.get_port("api") == guestutils.get_specific_exposed_port("web", own, "api")


def test_node_list_sorted_by_instance_with_ports_in_order(agent: FakeAgent) -> None:
    assert guestutils.get_node_list("web") == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert guestutils.get_node_list("web", ["api"]) == [
        "10.0.0.1:31001",
        "10.0.0.2:31002",
        "10.0.0.3:31003",
        "10.0.0.4:31004",
    ]
    zk = {"peer": (32001, 2888), "election": (32002, 3888)}
    agent.set_groups(
        "zk", [group([], entry("zk", "zk-2", "h2", [], zk), entry("zk", "zk-1", "h1", [], zk))]
    )
    assert guestutils.get_node_list("zk", ["peer", "election"]) == [
        "h1:32001:32002",
        "h2:32001:32002",
    ]
    assert guestutils.get_node_list("zk", ["election", "peer"]) == [
        "h1:32002:32001",
        "h2:32002:32001",
    ]


def test_node_list_unknown_port_raises(agent: FakeAgent) -> None:
    with pytest.raises(MaestroEnvironmentError, match="^No port ssh defined for container web.a"):
        guestutils.get_node_list("web", ["api", "ssh"])
    with pytest.raises(MaestroEnvironmentError, match="^No port ssh defined for container web.a"):
        guestutils.get_node_list("web", ["api", "ssh"], labels=["dev"], minimum=0)
    assert guestutils.get_node_list("web", ["api", "ssh"], labels=["x"], minimum=0) == []


def test_node_list_label_filter_is_a_subset_of_the_group_labels(agent: FakeAgent) -> None:
    dev = ["10.0.0.1:31001", "10.0.0.2:31002", "10.0.0.3:31003"]
    assert guestutils.get_node_list("web", ["api"], labels=["dev"]) == dev
    assert guestutils.get_node_list("web", ["api"], labels="dev") == dev
    assert guestutils.get_node_list("web", "api", labels=["frontend", "dev"]) == dev[:2]
    assert guestutils.get_node_list("web", labels=[]) == guestutils.get_node_list("web")
    assert guestutils.get_node_list("web", labels=["dev", "x"], minimum=0) == []
    with pytest.raises(MaestroEnvironmentError, match="^No or not enough web nodes configured$"):
        guestutils.get_node_list("web", labels=["dev", "x"])


def test_node_list_minimum(agent: FakeAgent) -> None:
    assert len(guestutils.get_node_list("web", minimum=4)) == 4
    with pytest.raises(MaestroEnvironmentError, match="^No or not enough web nodes configured$"):
        guestutils.get_node_list("web", minimum=5)
    assert guestutils.get_node_list("ghost", ["api"], minimum=0) == []
    with pytest.raises(MaestroEnvironmentError, match="^No or not enough ghost nodes configured$"):
        guestutils.get_node_list("ghost")


def test_node_list_follows_the_live_registry(agent: FakeAgent) -> None:
    agent.set_groups(
        "db", [group([], entry("db", "db.2", "10.9.0.2"), entry("db", "db.10", "10.9.0.10"))]
    )
    assert guestutils.get_node_list("db") == ["10.9.0.10", "10.9.0.2"]  # by name, as strings
    agent.set_groups("db", [])
    assert guestutils.get_node_list("db", minimum=0) == []


def test_get_registry_raw_answer(agent: FakeAgent) -> None:
    answer = guestutils.get_registry("web")
    assert answer["service"] == "web"
    assert [g["labels"] for g in answer["groups"]] == [["dev"], ["dev", "frontend"], ["prod"]]
    assert guestutils.get_registry("we b/x")["service"] == "we b/x"  # quoted in the path


def test_watch_registry(agent: FakeAgent) -> None:
    answer = guestutils.watch_registry(["web", "ghost"], 0, 1)
    assert answer["services"] == {"web": ["web.a", "web.b", "web.c", "web.d"], "ghost": []}
    assert agent.watches[-1] == (["web", "ghost"], 0, 1.0)


def test_agent_errors_are_discovery_errors(agent: FakeAgent) -> None:
    agent.errors.append(503)
    with pytest.raises(guestutils.DiscoveryError, match="503 injected 503") as caught:
        guestutils.get_node_list("web")
    assert caught.value.status == 503
    assert isinstance(caught.value, MaestroEnvironmentError)


def test_unreachable_or_invalid_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THESEUS_DISCOVERY", f"unix://{tmp_path}/missing.sock")
    with pytest.raises(guestutils.DiscoveryError, match="missing.sock"):
        guestutils.get_specific_host("web", "web.a")
    monkeypatch.setenv("THESEUS_DISCOVERY", "ftp://example")
    with pytest.raises(guestutils.DiscoveryError, match="THESEUS_DISCOVERY"):
        guestutils.get_registry("web")


# --- standard library only --------------------------------------------------------------------

ISOLATED_CHECK = """
import os, sys
sys.path.insert(0, os.getcwd())
import guestutils, watcher
assert watcher.guestutils is guestutils, watcher.guestutils
namespace = {}
exec("from guestutils import *", namespace)
print(sorted(set(namespace) - {"__builtins__"}))
loaded = {name.split(".")[0] for name in sys.modules}
foreign = loaded - set(sys.stdlib_module_names) - {"guestutils", "watcher", "__main__"}
assert not foreign, foreign
print(guestutils.get_node_list("svc", minimum=0) if os.environ.get("THESEUS_DISCOVERY") else "ok")
"""


def _copy_sources(directory: Path) -> None:
    for name in ("guestutils.py", "watcher.py"):
        shutil.copy(SOURCES / name, directory / name)


def test_modules_need_only_the_standard_library(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", ISOLATED_CHECK],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [repr(sorted(MAESTRO_NAMES)), "ok"]


def test_top_level_modules_against_an_agent(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    fake = FakeAgent(str(tmp_path / "a.sock"))
    fake.set_instances("svc", "svc.2", "svc.1")
    fake.start()
    try:
        result = subprocess.run(
            [sys.executable, "-E", "-s", "-S", "-c", ISOLATED_CHECK],
            cwd=tmp_path,
            env={"THESEUS_DISCOVERY": fake.address, "PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        fake.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "['10.0.0.1', '10.0.0.1']"
