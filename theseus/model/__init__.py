"""Domain types: specs, groups, tasks and nodes. Pure data, no I/O.

Everything that crosses etcd is one of these pydantic models, serialised as JSON.
"""
