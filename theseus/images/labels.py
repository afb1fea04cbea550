"""The labels Theseus writes on Docker objects: the names it finds them by again.

Written by the agent (``theseus.agent.launch`` for every task's containers,
``theseus.agent.drivers.docker_pods`` for a pod's) and by ``theseus.images.build`` (on each
image it builds); read by the docker driver when a restarted agent re-adopts its containers and
by ``theseus.images.containers`` for ``theseus down``. Containers started by an older version
carry these very names and are re-adopted by them: a renamed label strands them.
"""

from __future__ import annotations

# Every container of a task carries these.
LABEL_TASK = "theseus.task"
LABEL_SERVICE = "theseus.service"
LABEL_GROUP = "theseus.group"
LABEL_NODE = "theseus.node"
LABEL_CLUSTER = "theseus.cluster"
LABEL_VERSION = "theseus.version"
# The group's stop_after_server_loss_seconds ("30", "never"): an agent restarted while it
# reaches no server fences the containers it adopts by it, with no assignment to read it from.
LABEL_FENCE_AFTER = "theseus.stop-after-server-loss"

# A pod's containers also carry one of these: the infrastructure container lists the members
# (comma-separated, in spec order), and each member names itself and the infrastructure
# container whose network it joins.
LABEL_POD_MEMBERS = "theseus.pod.members"
LABEL_MEMBER = "theseus.pod.member"
LABEL_POD_INFRA = "theseus.pod.infra"

# On an image: the digest of the build context (and base images) it was built from, so that an
# unchanged image is not rebuilt.
LABEL_CONTEXT = "theseus.image.context-sha256"
