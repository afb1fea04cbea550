"""Waits run on a host by ``theseus cluster bootstrap``, from the host's own venv:
``python -m theseus.provision.hostcheck etcd URL PKI_DIR CERT_NAME`` exits 0 once the etcd
member at URL answers its health check over TLS (presenting the certificate ``CERT_NAME`` of
``PKI_DIR``), 1 after 60 s saying so.

On the host, not the workstation: etcd's client port need not be reachable from the
workstation, only from the servers. Called through the plan's etcd step.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from theseus.cluster.etcd_probe import etcd_answers
from theseus.security.files import PkiDir
from theseus.security.tls import client_context

TIMEOUT = 60.0


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "etcd":
        print(
            "usage: python -m theseus.provision.hostcheck etcd URL PKI_DIR CERT_NAME",
            file=sys.stderr,
        )
        return 2
    url, pki_dir, name = argv[1:]
    context = client_context(PkiDir(Path(pki_dir)), name)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if etcd_answers(f"{url}/health", context, timeout=2.0):
            return 0
        time.sleep(0.5)
    print(f"etcd at {url} is not healthy after {TIMEOUT:g} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
