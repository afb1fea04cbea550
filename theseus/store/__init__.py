"""Everything that touches etcd. The server is the only process that imports this package."""
