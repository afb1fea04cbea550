"""Each host's own sshd, and the keys of the test bed: one ed25519 host key per host, one client
key for root, and the ``known_hosts`` file holding every host's key, so that a client (the
bootstrap, the tests) checks host keys strictly, as against real machines.

Called by ``tests.testbed.up``. The sshd listens only on its host's address, port 22, takes
only the test bed's client key (``PermitRootLogin prohibit-password``, no passwords, no PAM),
and runs in the foreground (``-D``), so the PID recorded is the daemon's. What a session runs
is in the host's network namespace: the bootstrap's processes live there.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.testbed import processes
from tests.testbed.plan import SSH_PORT, HostPlan
from tests.testbed.state import ProcessEntry
from theseus.cluster.waiting import wait_until
from theseus.security.files import write_private

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it
SFTP_SERVER = "internal-sftp"  # a wheel copied over SFTP needs no binary of its own
SSHD_START_TIMEOUT = 20.0


class SshdError(RuntimeError):
    pass


def make_key(path: Path, comment: str) -> str:
    """A new ed25519 key at ``path`` (OpenSSH format, 0600) and ``path.pub``; the public line.
    An existing key is kept (``up`` after a partial ``up``): its public line is returned."""
    pub = path.with_name(path.name + ".pub")
    if path.exists() and pub.exists():
        return pub.read_text().strip()
    key = Ed25519PrivateKey.generate()
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode()} {comment}"
    pub.write_text(line + "\n")
    return line


def sshd_config(host: HostPlan, authorized_keys: Path) -> str:
    paths = host.paths
    return "\n".join(
        [
            "# Written by scripts/testbed: the sshd of test bed host " + host.name,
            f"ListenAddress {host.address}:{SSH_PORT}",
            f"HostKey {paths.sshd_host_key}",
            f"PidFile {paths.sshd_pidfile}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The keys live in the repository's work directory, wherever the repository is: a
            # clone under /tmp (world-writable) would fail StrictModes' check of every
            # directory above the authorized keys, and every login with it.
            "StrictModes no",
            "X11Forwarding no",
            "PrintMotd no",
            "PermitUserEnvironment no",
            # The bootstrap opens several sessions per host at once.
            "MaxSessions 32",
            "MaxStartups 32:30:64",
            f"Subsystem sftp {SFTP_SERVER}",
            "",
        ]
    )


def known_hosts_line(host: HostPlan, host_public_line: str) -> str:
    """``<address> ssh-ed25519 AAAA...``: port 22, so no ``[address]:port`` form."""
    keytype, key = host_public_line.split()[:2]
    return f"{host.address} {keytype} {key}"


def prepare(host: HostPlan, authorized_keys: Path) -> str:
    """Host key and config for ``host``; the host key's public line."""
    host.paths.sshd_dir.mkdir(parents=True, exist_ok=True)
    host.paths.sshd_dir.chmod(0o700)
    public = make_key(host.paths.sshd_host_key, f"root@{host.name}")
    host.paths.sshd_config.write_text(sshd_config(host, authorized_keys))
    return public


def sshd_argv(host: HostPlan) -> list[str]:
    return [SSHD, "-D", "-f", str(host.paths.sshd_config), "-E", str(host.paths.sshd_log)]


def check_config(host: HostPlan) -> None:
    """``sshd -t``: a bad config fails here, with sshd's own words, not as a silent exit."""
    result = subprocess.run(
        processes.in_netns(host.netns, [SSHD, "-t", "-f", str(host.paths.sshd_config)]),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SshdError(f"sshd -t for {host.name}: {result.stderr.strip()}")


def start_sshd(host: HostPlan) -> ProcessEntry:
    check_config(host)
    host.paths.sshd_pidfile.unlink(missing_ok=True)
    # sshd -E appends to its log; the spawn log catches what it says before it opens it.
    return processes.start(
        f"sshd-{host.name}",
        "sshd",
        host.netns,
        sshd_argv(host),
        host.paths.sshd_dir / "sshd.stdout.log",
    )


def banner(address: str, port: int = SSH_PORT) -> bytes | None:
    """The server's identification line, or None when nothing answers there yet."""
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1) as s:
        s.settimeout(2)
        return s.recv(64)
    return None


def wait_sshd(host: HostPlan, entry: ProcessEntry, timeout: float = SSHD_START_TIMEOUT) -> None:
    def ready() -> bool:
        if not processes.alive(entry):
            log = (
                host.paths.sshd_log.read_text(errors="replace")
                if host.paths.sshd_log.exists()
                else ""
            )
            raise SshdError(f"the sshd of {host.name} exited: {log.strip()[-1500:]}")
        return (banner(host.address) or b"").startswith(b"SSH-2.0-")

    wait_until(ready, timeout, f"the sshd of {host.name} to answer", interval=0.1)
