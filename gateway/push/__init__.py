"""Push delivery: APNs, FCM HTTP v1 and Web Push providers behind one interface.

Use `PushService(config, outcomes).notify(record, payload)` with a payload Struct from
`gateway.push.payloads`; `LifecycleOutcomes(instance_service)` applies dead targets and
the off state to the instance lifecycle. The modules:

- `base`: Notification, PushResult, the PushProvider and PushOutcomes interfaces
- `payloads`: the payload Structs, their per-service encodings and size limits
- `http2`, `jwt`: the HTTP/2 client pool and the JWT signing the providers share
- `apns`, `fcm`, `webpush`: one provider per service
- `service`: fan-out, in-flight limits, retries, auth renewal, alerts
- `outcomes`: dead-target removal and the off state on the instance lifecycle

Nothing in this package imports the API or SIP layers.
"""

from gateway.push.base import (
    Notification,
    PushOutcomes,
    PushProvider,
    PushResult,
    has_call_target,
    remove_target,
)
from gateway.push.outcomes import LifecycleOutcomes
from gateway.push.service import Delivery, PushService, notification_for, targets_for

__all__ = [
    "Delivery",
    "LifecycleOutcomes",
    "Notification",
    "PushOutcomes",
    "PushProvider",
    "PushResult",
    "PushService",
    "has_call_target",
    "notification_for",
    "remove_target",
    "targets_for",
]
