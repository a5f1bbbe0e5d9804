"""Locks at the edge: one Durable Object per resource with an alarm-expired lease, an
owner token, a monotonic fencing token and a FIFO wait queue.

Worker code uses :class:`EdgeLock`; the Durable Object class is
:class:`edge_kv.edge.objects.LockService`. See docs/edge-limits-locks.md.
"""

from edge_kv.edge.locks.client import EdgeLock, LockBusy, check_resource, new_owner
from edge_kv.edge.locks.durable import LockObject, LockServiceRpc
from edge_kv.edge.locks.service_api import register as register_service_api
from edge_kv.edge.locks.settings import lock_limits
from edge_kv.edge.locks.state import LockLimits, LockRecord

__all__ = [
    "EdgeLock",
    "LockBusy",
    "LockLimits",
    "LockObject",
    "LockRecord",
    "LockServiceRpc",
    "check_resource",
    "lock_limits",
    "new_owner",
    "register_service_api",
]
