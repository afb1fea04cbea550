"""The control-plane process: HTTP API for CLI and agents, and (when elected) the leader.

Set here, before anything imports gRPC (the etcd client's transport): the leader forks a child
for each reconcile pass (``theseus.server.pass_process``), a child that never touches gRPC.
gRPC's own fork handlers would then only get in the way: they refuse to run while other
threads use gRPC (logging a line per fork) and, when they do run, wait for those threads.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
