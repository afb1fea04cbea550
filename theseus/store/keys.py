"""The etcd key layout of Theseus's own state (the service registry lives apart, see docs).

::

    /theseus/cluster_id            random id of this cluster, written once
    /theseus/leader                the elected leader (attached to its lease)
    /theseus/groups/<service>/<labels JSON>   GroupRecord
    /theseus/tasks/<task id>       TaskRecord   (desired state; written by the leader only)
    /theseus/status/<task id>      TaskStatus   (observed state; from agents' reports)
    /theseus/nodes/<node>          NodeRecord   (what the agent declared)
    /theseus/alive/<node>          liveness: while it exists the node is alive; the TTL
                                   it may go unheard (deleted by the leader past it)
    /theseus/heard/<server>        the nodes that server heard since its previous record
    /theseus/control/<node>        NodeControl  (the operator's drain / eligibility)
    /theseus/versions/<service>/<labels JSON>/<n>   SpecVersion (a group's spec history)
    /theseus/deployments/<id>      DeploymentRecord (one change of a group, followed)
    /theseus/acl/tokens/<id>       TokenRecord  (an API token: its scopes, its secret's hash)
    /theseus/acl/join/<id>         JoinTokenRecord
    /theseus/acl/certs/<node>      NodeCertificate (the node's current certificate)
    /theseus/acl/revoked/<serial>  RevokedCertificate
    /theseus/acl/bootstrap         Bootstrap (the first admin token was issued)
    /theseus/acl/registries/<host> RegistryLogin (an image registry's credentials, for agents)
    /theseus/audit/<time>-<n>      AuditRecord (one write through the API; not cached)
    /theseus/events/<index>-<n>    a batch of notable events (JSON list; an hour's lease)
    /theseus/event-subs/<id>       Subscription (an HTTP callback of the event stream)
    /theseus/event-cursors/<id>    the id of the last event its receiver acknowledged

The service registry lives beside it, under ``/services/`` (``theseus.model.registry``).
All values are JSON. The cache follows both with one watch over the key range
``[MIRROR_START, MIRROR_END)``, which spans ``/services/`` to ``/theseus/``; keys in between
that belong to neither are ignored.
"""

from __future__ import annotations

from theseus.model import registry

REGISTRY = registry.PREFIX

PREFIX = "/theseus/"
CLUSTER_ID = PREFIX + "cluster_id"
LEADER = PREFIX + "leader"
GROUPS = PREFIX + "groups/"
TASKS = PREFIX + "tasks/"
STATUS = PREFIX + "status/"
NODES = PREFIX + "nodes/"
ALIVE = PREFIX + "alive/"
HEARD = PREFIX + "heard/"
CONTROL = PREFIX + "control/"
VERSIONS = PREFIX + "versions/"
DEPLOYMENTS = PREFIX + "deployments/"
ACL = PREFIX + "acl/"
TOKENS = ACL + "tokens/"
JOIN_TOKENS = ACL + "join/"
CERTIFICATES = ACL + "certs/"
REVOKED = ACL + "revoked/"
BOOTSTRAP = ACL + "bootstrap"
REGISTRY_LOGINS = ACL + "registries/"
AUDIT = PREFIX + "audit/"
EVENTS = PREFIX + "events/"
EVENT_SUBSCRIPTIONS = PREFIX + "event-subs/"
EVENT_CURSORS = PREFIX + "event-cursors/"


def prefix_end(prefix: str) -> str:
    """The end of ``prefix``'s key range (the first key after every key under it)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


MIRROR_START = REGISTRY
MIRROR_END = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)  # "/theseus0": just past "/theseus/..."


def group_key(group: str) -> str:
    return GROUPS + group


def task_key(task_id: str) -> str:
    return TASKS + task_id


def status_key(task_id: str) -> str:
    return STATUS + task_id


def node_key(name: str) -> str:
    return NODES + name


def alive_key(name: str) -> str:
    return ALIVE + name


def heard_key(server: str) -> str:
    return HEARD + server


def control_key(name: str) -> str:
    return CONTROL + name


def version_key(group: str, number: int) -> str:
    return f"{VERSIONS}{group}/{number}"


def parse_version_key(key: str) -> tuple[str, int] | None:
    """(group key, version number) of a key under ``VERSIONS``; None if it is not one."""
    group, _, number = key.removeprefix(VERSIONS).rpartition("/")
    return (group, int(number)) if group and number.isdigit() else None


def deployment_key(deployment_id: str) -> str:
    return DEPLOYMENTS + deployment_id


def token_key(token_id: str) -> str:
    return TOKENS + token_id


def join_token_key(token_id: str) -> str:
    return JOIN_TOKENS + token_id


def certificate_key(node: str) -> str:
    return CERTIFICATES + node


def revoked_key(serial: str) -> str:
    return REVOKED + serial


def registry_login_key(host: str) -> str:
    return REGISTRY_LOGINS + host
