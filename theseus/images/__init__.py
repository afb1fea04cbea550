"""Theseus's own things on this machine's Docker Engine, apart from the tasks an agent runs.

* ``tags``: the names of the local images.
* ``contexts``: what goes into each image (build contexts assembled from this machine's files;
  no Docker I/O).
* ``build``: sends the contexts to the Docker Engine (``theseus images build``, the tests).
* ``labels``: the labels Theseus writes on Docker objects, by which a restarted agent finds its
  containers and ``theseus down`` a cluster's.
* ``containers``: removes a cluster's containers (``theseus down``).
* ``busybox/``, ``python-base/``, ``example/``: the images' own files (package data, copied
  into the images; not Theseus code).

Called by the CLI (``theseus.cli.images_cmd``), the local launcher (``theseus.cluster.local``)
and the agent's docker driver (the labels it writes, the busybox image of a pod's network
container). It imports nothing else of Theseus, so the CLI reaches Docker without importing the
agent. This file imports nothing: the agent reads ``labels`` and ``tags`` without loading the
Docker client.
"""
