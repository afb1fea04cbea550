"""The tags of Theseus's local images (built here, never pulled).

``theseus.images.contexts`` says what goes into each; the agent's docker driver runs
``BUSYBOX_IMAGE`` as every pod's network container (``theseus.agent.drivers.docker_pods``).
"""

from __future__ import annotations

BUSYBOX_IMAGE = "theseus/busybox:latest"
PYTHON_BASE_IMAGE = "theseus/python-base:latest"
EXAMPLE_IMAGE = "theseus/example:latest"
