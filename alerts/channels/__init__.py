"""Channels: how a rendered message leaves the building. Each raises :class:`DeliveryError`.

::

    DeliveryError(reason, retryable=True)            transient: the outbox retries with backoff
    DeliveryError(reason, retryable=True, retry_after=s)   the peer asked us to wait (Slack 429)
    DeliveryError(reason, retryable=False)           permanent: the row goes to ``dead`` at once
"""

from alerts.channels.base import Channel, DeliveryError, Outgoing

__all__ = ["Channel", "DeliveryError", "Outgoing"]
