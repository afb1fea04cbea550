"""Real sshd processes on loopback addresses, as hosts for ``theseus cluster bootstrap``.

Each is ``/usr/sbin/sshd -D -f CONFIG`` with its own host key, pid file and the test's client
key authorized (``UsePAM no``, root by key only, SFTP built in), started as the test's child and
stopped by its PID. The hosts share this machine's filesystem and Docker Engine: each gets its
own ``install.prefix``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    address: str
    port: int
    process: subprocess.Popen[bytes]
    host_key: Path
    directory: Path

    @property
    def fingerprint(self) -> str:
        """The host key's ``SHA256:...``, as ``ssh-keygen -l`` prints it."""
        out = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{self.host_key}.pub"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.split()[1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def client_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    if not key.exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(directory: Path, address: str, port: int, authorized: Path) -> Sshd:
    """An sshd on ``address:port`` that lets in the holder of ``authorized``'s key as root."""
    directory.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    host_key = directory / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (directory / "authorized_keys").write_text(authorized.read_text())
    config = directory / "sshd_config"
    config.write_text(
        f"ListenAddress {address}:{port}\n"
        f"HostKey {host_key}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
        "UsePAM no\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "StrictModes no\n"
        "Subsystem sftp internal-sftp\n"
        "MaxSessions 50\n"
        "MaxStartups 50\n"
    )
    log = directory / "sshd.log"
    process = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)])
    sshd = Sshd(address, port, process, host_key, directory)
    deadline = time.monotonic() + 10
    while not _answers(address, port):
        if process.poll() is not None or time.monotonic() > deadline:
            sshd.stop()
            raise RuntimeError(f"sshd on {address}:{port} did not start: {log.read_text()}")
        time.sleep(0.05)
    return sshd
