"""The agent's identity in a secure cluster: joining with a join token, the certificate it got
(kept under ``<state dir>/pki``), and renewing it well before it expires.

Joining (``join``), as Swarm and kubeadm do it:

1. fetch the CA certificate from the server without trusting it yet (``GET /v1/ca``), and
   refuse the server unless the CA's public key hashes to the pin in the join token: a server
   in the middle cannot present the cluster's CA;
2. make a key here (it never leaves the node) and send a CSR with the token over TLS that
   now verifies the server against that CA (``POST /v1/join``);
3. keep the certificate; from then on every call presents it (mutual TLS), and a restarted
   agent needs no token.

``Identity`` holds the TLS contexts the agent's clients and its own endpoint use; renewal
(``renew_forever``) loads the new certificate into those same contexts, so new connections
use it without anything being rebuilt. Called by ``theseus.agent.agent``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import httpx

from theseus.api.access import CaAnswer, CertificateAnswer, CertificateRequest, JoinRequest
from theseus.api.agent_client import AsyncServerClient
from theseus.security import pki
from theseus.security.files import PkiDir
from theseus.security.tls import client_context, server_context, unverified_context
from theseus.security.tokens import TokenError, parse_join_token

log = logging.getLogger(__name__)

NAME = "agent"  # the files: <state dir>/pki/agent.pem, agent-key.pem, ca.pem
# Renew at a random point between half and four fifths of the certificate's life (Swarm's
# spread): a fleet that joined together does not renew together.
RENEW_AT = (0.5, 0.8)
RETRY = 5.0


class JoinError(RuntimeError):
    """Joining failed; the message says why and what to do."""


def pki_dir(state_dir: Path) -> PkiDir:
    return PkiDir(state_dir / "pki")


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text


async def join(
    servers: Sequence[str], token_text: str, name: str, address: str, files: PkiDir
) -> None:
    """Join through the first server that answers; the certificate lands in ``files``."""
    try:
        token = parse_join_token(token_text)
    except TokenError as exc:
        raise JoinError(str(exc)) from None
    errors: list[str] = []
    for server in servers:
        try:
            async with httpx.AsyncClient(verify=unverified_context(), timeout=10) as insecure:
                answer = await insecure.get(f"{server}/v1/ca")
        except httpx.TransportError as exc:
            errors.append(f"{server}: {exc.__class__.__name__}: {exc}")
            continue
        if answer.status_code != 200:
            errors.append(f"{server}: {answer.status_code} {_message(answer)}")
            continue
        ca_pem = CaAnswer.model_validate(answer.json()).certificate.encode()
        if pki.ca_fingerprint(ca_pem) != token.ca_pin:
            raise JoinError(
                f"the server at {server} presents a CA that does not match the join token's "
                "pin: refusing to join (a server of another cluster, or someone in between)"
            )
        key = pki.new_key()
        request = JoinRequest(
            token=token_text.strip(),
            csr=pki.make_csr(key, name, pki.Role.AGENT).decode(),
            address=address,
        )
        async with httpx.AsyncClient(verify=client_context(ca_pem=ca_pem), timeout=10) as client:
            response = await client.post(f"{server}/v1/join", json=request.model_dump())
        if response.status_code != 200:
            raise JoinError(f"{server} refused to admit node {name!r}: {_message(response)}")
        issued = CertificateAnswer.model_validate(response.json())
        files.write_ca_cert(ca_pem)
        files.write(NAME, pki.Issued(issued.certificate.encode(), pki.key_pem(key)))
        log.info("joined the cluster as node %s (certificate until %s)", name, _when(issued))
        return
    raise JoinError("no server answered: " + "; ".join(errors))


def _when(answer: CertificateAnswer) -> str:
    return datetime.datetime.fromtimestamp(answer.not_after, datetime.UTC).isoformat()


class Identity:
    """The agent's certificate and the TLS contexts built on it."""

    def __init__(self, files: PkiDir, name: str) -> None:
        self.files = files
        cert = files.read(NAME).cert
        holder = pki.identity(cert)
        if holder.name != name:
            raise JoinError(
                f"the certificate in {files.root} is node {holder.name!r}'s, not {name!r}: "
                "start the agent with that name, or another state directory"
            )
        self.name = name
        self.client = client_context(files, NAME)  # calls to servers
        self.server = server_context(files, NAME)  # the agent's own endpoint

    @property
    def certificate(self) -> bytes:
        return self.files.cert(NAME).read_bytes()

    def _reload(self) -> None:
        for context in (self.client, self.server):
            context.load_cert_chain(self.files.cert(NAME), self.files.key(NAME))

    async def renew(self, client: AsyncServerClient, address: str) -> None:
        """Ask for a new certificate with the current one; keep both files and contexts."""
        key = pki.new_key()
        csr = pki.make_csr(key, self.name, pki.Role.AGENT).decode()
        answer = await client.renew_certificate(
            self.name, CertificateRequest(csr=csr, address=address)
        )
        self.files.write(NAME, pki.Issued(answer.certificate.encode(), pki.key_pem(key)))
        self._reload()
        log.info("renewed this node's certificate (until %s)", _when(answer))

    def next_renewal(self, now: datetime.datetime, fraction: float) -> float:
        """Seconds from ``now`` until ``fraction`` of the current certificate's life."""
        holder = pki.identity(self.certificate)
        due = holder.not_before + (holder.not_after - holder.not_before) * fraction
        return max(0.0, (due - now).total_seconds())

    async def renew_forever(self, client: AsyncServerClient, address: str) -> None:
        while True:
            fraction = random.uniform(*RENEW_AT)
            await asyncio.sleep(self.next_renewal(datetime.datetime.now(datetime.UTC), fraction))
            try:
                await self.renew(client, address)
            except Exception as exc:  # the server away, or refusing: try again soon
                log.warning("certificate renewal failed (%s); retrying in %.0fs", exc, RETRY)
                await asyncio.sleep(RETRY)
