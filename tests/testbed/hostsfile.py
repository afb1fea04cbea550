"""The test bed's ``hosts.yaml``, in the format of ``docs/machines.md``: what ``theseus cluster
bootstrap -f .testbed/hosts.yaml`` reads to set the hosts up over SSH, as it would real ones.

Pure (``hosts_document``) plus one write; called by ``tests.testbed.up``. Cluster ``testbed``;
h1 runs etcd and a server (role ``both``), the others are agents; each host's ``install.prefix``
is its own directory (the hosts share this machine's filesystem) and its ``docker_host`` its
own engine's socket. The SSH key and ``known_hosts`` are the test bed's, relative to the file.
Every agent's pods get their network container from the test bed's registry
(``agent.pod_infra_image``), as on real hosts that have no locally built images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tests.testbed.plan import CLUSTER_NAME, SSH_PORT, TestbedPlan
from theseus.images.tags import BUSYBOX_IMAGE


def hosts_document(plan: TestbedPlan) -> dict[str, Any]:
    base = plan.hosts_file.parent
    return {
        "cluster": CLUSTER_NAME,
        "ssh": {
            "user": "root",
            "port": SSH_PORT,
            "key": os.path.relpath(plan.client_key, base),
            "known_hosts": os.path.relpath(plan.known_hosts, base),
        },
        # Pushed there by up (tests.testbed.registry.IMAGES) before the bootstrap runs.
        # No login cache: a login a test changes (a wrong password) is the very next pull's.
        "agent": {
            "pod_infra_image": f"{plan.registry.host}/{BUSYBOX_IMAGE}",
            "registry_login_cache": 0,
        },
        "hosts": [
            {
                "name": host.name,
                "address": host.address,
                "advertise": host.address,
                "role": host.role,
                "attributes": host.attributes,
                "install": {
                    "prefix": str(host.paths.prefix),
                    "docker_host": host.docker_host,
                },
            }
            for host in plan.hosts
        ],
    }


def write_hosts_file(plan: TestbedPlan) -> Path:
    for host in plan.hosts:
        host.paths.prefix.mkdir(parents=True, exist_ok=True)
    text = "# Written by scripts/testbed up; removed by scripts/testbed down.\n" + yaml.safe_dump(
        hosts_document(plan), sort_keys=False
    )
    plan.hosts_file.write_text(text)
    return plan.hosts_file
