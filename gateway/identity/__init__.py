"""Which node ids the gateway accepts, and from where: the bounded registry, new-node
admission and the node-to-channel pins (docs/security.md)."""
