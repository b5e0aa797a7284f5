"""Incoming SIP MESSAGEs for sleeping phones: filtered, stored sealed, pushed, fetched.

`MessageBox(store, box)` is the stored side: `put(instance_id, content)` seals a
`MessageContent` (AES-GCM, the instance id and message id as associated data) and stores
it durably; `fetch(instance_id)` opens them for the device API; `ack(instance_id, ids)`
deletes them (and erases them from disk); `count(instance_id)`.

`MessageIntake(box, push, settings)` is the SIP side, given a MESSAGE already matched to
an instance and allowed in (see `gateway.calls.ProviderFace`). SIPIS's filter rules:
- `application/im-iscomposing+xml`: accepted (200) and dropped;
- a body over `messages.max_body_bytes` (4 MiB): 413;
- IMDN reports (`message/imdn+xml`, or `;imdn` in the Content-Type): stored, not pushed;
- anything else: stored, answered 200 only once the store committed it, then pushed
  (`MessagePush` with the number of messages waiting).
A full mailbox (`messages.max_pending`) gets 486; an instance erased meanwhile gets the
configured answer for unknown instances.

Depends on the store, the push payloads, the config and the metrics; the SIP message is
read through its public fields only, and answers go back as (status, reason).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec

from gateway import logs, metrics
from gateway.config import Config
from gateway.errors import SealError
from gateway.push.payloads import MessagePush
from gateway.store.records import InstanceRecord, MessageContent, StoredMessage
from gateway.tasks import Background

log = logs.get_logger(__name__)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(MessageContent).decode


def _aad(instance_id: str, message_id: str) -> bytes:
    return f"message:{instance_id}:{message_id}".encode()


class MessageBox:
    def __init__(self, store: Any, box: Any):
        self.store = store
        self.box = box

    async def put(self, instance_id: str, content: MessageContent, max_pending: int) -> tuple[str, str]:
        """Store durably; (outcome, message id): outcome "stored", "full" or "gone"."""
        message_id = secrets.token_urlsafe(12)
        sealed = self.box.seal(_encode(content).decode(), _aad(instance_id, message_id))
        row = StoredMessage(message_id, instance_id, time.time(), sealed)
        return await self.store.put_message(row, max_pending), message_id

    async def fetch(self, instance_id: str, limit: int = 1000) -> list[tuple[StoredMessage, MessageContent]]:
        """The instance's messages, oldest first, opened. A row that does not open (a
        foreign key file, tampering) is skipped and logged rather than failing the lot."""
        out = []
        for row in await self.store.list_messages(instance_id, limit):
            try:
                content = _decode(self.box.open(row.sealed, _aad(instance_id, row.id)))
            except (SealError, msgspec.DecodeError) as exc:
                log.error("stored message does not open", instance=instance_id, message=row.id, error=str(exc))
                continue
            out.append((row, content))
        if out:
            metrics.message_fetched(len(out))
        return out

    async def ack(self, instance_id: str, ids: list[str]) -> int:
        return await self.store.delete_messages(instance_id, ids)

    async def count(self, instance_id: str) -> int:
        return await self.store.count_messages(instance_id)


def is_composing(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/im-iscomposing+xml"


def is_imdn(content_type: str) -> bool:
    lowered = content_type.lower()
    return lowered.split(";")[0].strip() == "message/imdn+xml" or ";imdn" in lowered.replace(" ", "")


class MessageIntake:
    def __init__(self, config: Config, box: MessageBox, push: Any):
        self.settings = config.messages
        self.unknown = config.calls.unknown_status
        self.box = box
        self.push = push
        self._tasks = Background(__name__)

    async def receive(self, record: InstanceRecord, request: Any) -> tuple[int, str]:
        """What to answer the MESSAGE with; stores (and later pushes) as the rules say."""
        content_type = request.content_type or "text/plain"
        if is_composing(content_type):
            return 200, "OK"
        if request.content_length > self.settings.max_body_bytes or len(request.body) > self.settings.max_body_bytes:
            return 413, "Request Entity Too Large"
        sender = request.from_
        imdn = is_imdn(content_type)
        content = MessageContent(sender=str(sender.uri), sender_name=sender.display_name,
                                 content_type=content_type, body=request.body, imdn=imdn,
                                 sip_call_id=request.call_id)
        outcome, message_id = await self.box.put(record.id, content, self.settings.max_pending)
        if outcome == "gone":
            return self.unknown, "Not Found" if self.unknown == 404 else "Temporarily Unavailable"
        if outcome == "full":
            return 486, "Busy Here"
        metrics.message_stored()
        if not imdn:
            self._tasks.spawn(self._push(record, content, message_id))
        return 200, "OK"

    async def _push(self, record: InstanceRecord, content: MessageContent, message_id: str) -> None:
        count = await self.box.count(record.id)
        body = None
        if content.content_type.lower().startswith("text/"):
            body = content.body.decode("utf-8", "replace")
        payload = MessagePush(instance=record.id, sender=content.sender, message_id=message_id,
                              count=max(count, 1), body=body)
        await self.push.notify(record, payload)

    async def close(self) -> None:
        await self._tasks.close()
