"""A multi-host test bed on one machine (``scripts/testbed up|down|status|registry``): hosts
that are Linux network namespaces on 198.18.0.0/15, each with its own Docker Engine, sshd and
state directories, and an image registry of its own; see ``docs/machines.md``.

Modules: ``plan`` (names, addresses, paths; pure), ``network`` (namespaces, bridge, veths,
iptables), ``processes`` (daemons started in a namespace, stopped by recorded PID),
``engines`` (dockerd), ``sshd`` (sshd and keys), ``registry`` (the image registry),
``hostsfile`` (``hosts.yaml``), ``context`` (the CLI's contexts), ``state`` (what was made),
``up``, ``down``, ``cli`` and ``fixture`` (pytest).
"""
