"""SSH to the hosts of a hosts file (asyncssh): connecting with host keys checked, running
commands (through ``sudo -n`` when the user is not root), writing files by SFTP.

Host keys are checked against the host's ``known_hosts`` file; a key that is not there stops
the run before anything changes (``HostKeyUnknown``, with its SHA256 fingerprint) unless the
operator accepted that very fingerprint (``--accept-host-key HOST=SHA256:...``), which is then
recorded in the file. Secrets never travel on a command line: files carry them (SFTP).
Called by ``theseus.provision.run``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import asyncssh

from theseus.provision.hosts import Host

CONNECT_TIMEOUT = 10.0
STEP_TIMEOUT = 120.0


class SshError(RuntimeError):
    """A host could not be reached or refused us; the message says which and why."""


class HostKeyUnknown(SshError):
    def __init__(self, host: Host, fingerprint: str) -> None:
        self.host = host
        self.fingerprint = fingerprint
        super().__init__(
            f"{host.name} ({host.address}:{host.port}): its host key {fingerprint} is not in "
            f"{host.known_hosts}. If that is the key you expect, run again with "
            f"--accept-host-key {host.name}={fingerprint}"
        )


@dataclass(frozen=True)
class Completed:
    exit_status: int
    stdout: str
    stderr: str


def _known_hosts_pattern(host: Host) -> str:
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


def _trusted(host: Host) -> asyncssh.SSHKnownHosts:
    try:
        return asyncssh.read_known_hosts(str(host.known_hosts))
    except FileNotFoundError:
        return asyncssh.import_known_hosts("")


def record_host_key(host: Host, key: asyncssh.SSHKey) -> None:
    line = f"{_known_hosts_pattern(host)} {key.export_public_key('openssh').decode().strip()}\n"
    host.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(host.known_hosts, "a") as file:
        file.write(line)


async def _connect(host: Host) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        host.address,
        port=host.port,
        username=host.user,
        client_keys=[str(host.key)] if host.key is not None else (),
        known_hosts=_trusted(host),
        connect_timeout=CONNECT_TIMEOUT,
        config=None,
    )


async def connect(host: Host, accepted: dict[str, str]) -> Connection:
    """A connection to ``host``; ``accepted`` maps a host's name or address to the one
    fingerprint the operator accepted for it."""
    try:
        try:
            return Connection(host, await _connect(host))
        except asyncssh.HostKeyNotVerifiable:
            key = await asyncssh.get_server_host_key(host.address, host.port)
            if key is None:
                raise SshError(f"{host.name}: no host key offered") from None
            fingerprint = key.get_fingerprint("sha256")
            if fingerprint not in (accepted.get(host.name), accepted.get(host.address)):
                raise HostKeyUnknown(host, fingerprint) from None
            record_host_key(host, key)
            return Connection(host, await _connect(host))
    except SshError:
        raise
    except asyncssh.PermissionDenied:
        raise SshError(
            f"{host.name} ({host.user}@{host.address}:{host.port}): authentication refused"
            + (f" for the key {host.key}" if host.key else "")
        ) from None
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        reason = str(exc) or exc.__class__.__name__
        raise SshError(f"{host.name} ({host.address}:{host.port}): {reason}") from None


class Connection:
    def __init__(self, host: Host, conn: asyncssh.SSHClientConnection) -> None:
        self.host = host
        self.conn = conn

    def wrap(self, command: str) -> str:
        """The command as sent: ``sh -c``, through ``sudo -n`` for a user other than root."""
        shell = "sh -c " + shlex.quote(command)
        return f"sudo -n {shell}" if self.host.sudo else shell

    async def run(
        self, command: str, input: str | None = None, timeout: float = STEP_TIMEOUT
    ) -> Completed:
        try:
            done = await self.conn.run(
                self.wrap(command), input=input, check=False, timeout=timeout
            )
        except asyncssh.TimeoutError as exc:
            return Completed(124, str(exc.stdout or ""), f"timed out after {timeout:g} s")
        except (asyncssh.Error, OSError) as exc:
            return Completed(255, "", f"ssh: {exc}")
        return Completed(
            done.exit_status if done.exit_status is not None else 255,
            str(done.stdout or ""),
            str(done.stderr or ""),
        )

    async def clock(self) -> tuple[float, float, str]:
        """The host's clock, with the workstation's before and after: ``read`` waits for a
        line sent once the shell said it runs, so the round trip is one message each way, not the
        opening of a session."""
        async with self.conn.create_process(
            self.wrap("echo ready; read line; date +%s.%N"), encoding="utf-8"
        ) as process:
            await asyncio.wait_for(process.stdout.readline(), 10)
            sent = time.time()
            process.stdin.write("now\n")
            output = await asyncio.wait_for(process.stdout.readline(), 10)
            received = time.time()
        return sent, received, str(output)

    async def put(self, path: str, content: bytes, mode: int) -> Completed:
        """Write ``content`` to ``path`` atomically, with ``mode``; as another user than
        root, through a private temporary file moved into place by sudo."""
        target = PurePosixPath(path)
        staging = (
            f"{target.parent}/.{target.name}.{secrets.token_hex(4)}"
            if not self.host.sudo
            else f"/tmp/theseus-{secrets.token_hex(8)}"
        )
        try:
            async with self.conn.start_sftp_client() as sftp:
                if not self.host.sudo:
                    await sftp.makedirs(str(target.parent), exist_ok=True)
                async with sftp.open(staging, "wb", asyncssh.SFTPAttrs(permissions=0o600)) as f:
                    await f.write(content)
                if not self.host.sudo:
                    await sftp.chmod(staging, mode)
                    await sftp.posix_rename(staging, path)
                    return Completed(0, "", "")
        except (asyncssh.Error, OSError) as exc:
            return Completed(1, "", f"sftp: writing {path}: {exc}")
        q = shlex.quote
        return await self.run(
            f"install -D -m {mode:04o} {q(staging)} {q(path)}; s=$?; rm -f {q(staging)}; exit $s"
        )

    async def put_dir(self, source: Path, target: str) -> Completed:
        staging = target if not self.host.sudo else f"/tmp/theseus-{secrets.token_hex(8)}"
        try:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.makedirs(staging, exist_ok=True)
                names = sorted(os.listdir(source))
                await asyncio.gather(
                    *(sftp.put(str(source / name), f"{staging}/{name}") for name in names)
                )
        except (asyncssh.Error, OSError) as exc:
            return Completed(1, "", f"sftp: copying {source} to {target}: {exc}")
        if staging == target:
            return Completed(0, "", "")
        q = shlex.quote
        return await self.run(
            f"mkdir -p {q(target)} && cp -r {q(staging)}/. {q(target)}/ && rm -rf {q(staging)}"
        )

    def close(self) -> None:
        self.conn.close()
