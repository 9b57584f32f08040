"""Slack: the Web API (``chat.postMessage``, ``chat.update``) through slack-sdk's ``AsyncWebClient``,
or an incoming webhook through ``AsyncWebhookClient``.

Threading (bot token only): an alert's first message is posted to the receiver's channel and its
``channel:ts`` becomes the notification's ``external_ref``. Reminders and ``updated`` messages are
replies in that thread (``updated`` is also broadcast to the channel); ``resolved`` updates the
original message in place (``chat.update``) and replies in the thread. An ``action`` row (someone
clicked Acknowledge or Silence 24 h, see :mod:`alerts.web.slack_actions`) only updates the message
named by its target's ``update_ref`` (``channel:ts``) in place and posts nothing. A webhook cannot
thread or update, so there every message is a new one (and ``action`` rows fail: nothing to update).

Outcomes (R2.4), decided by :func:`classify` and tested as a table over every status 100–599::

    2xx and ok:true            delivered
    429                        retry after Retry-After (missing/invalid: 1 s + jitter; 1 s..15 min),
                               not counted as an attempt; this channel pauses until then
    5xx, timeout, reset        retry with backoff
    2xx and ok:false, 1xx,     dead at once (channel_not_found, invalid_auth, not_in_channel, ...);
    3xx, other 4xx             redirects are never followed: a 3xx means base_url is wrong

The outbox is the only retry mechanism: slack-sdk runs with no retry handlers at all (R2.3), and
its loggers never see message bodies or the webhook URL.

Idempotency: every post carries Slack message ``metadata`` with the outbox row's idempotency key
and the database's instance id (two deployments posting to one channel have the same keys).
When a row is retried (its earlier attempt may have reached Slack before the connection broke),
the channel first looks for a message with that key (``conversations.replies`` in the thread, or
``conversations.history`` of the channel since the row was created) and, if it finds one, records
that message instead of posting again. The look-up needs the ``channels:history`` scope (and
``groups:history`` for private channels) and the channel's id: given in the config (``C0123…``),
learned from an earlier post, or found with ``conversations.list`` (``channels:read``). Without
them a retry after an ambiguous failure may post twice — the at-least-once budget of R2.3.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from alerts.channels.base import DeliveryError, Outgoing
from alerts.config import SlackSettings
from alerts.models import Kind, as_utc, utcnow
from alerts.netguard import NonPublicAddress, PublicOnlyResolver

log = logging.getLogger("alerts.channels.slack")

# slack-sdk logs request bodies (and the webhook URL) at DEBUG; never let that reach our log.
_sdk_log = logging.getLogger("alerts.channels.slack.sdk")
_sdk_log.setLevel(logging.WARNING)

METADATA_EVENT = "alerts_notification"
RETRY_AFTER_MIN = 1.0
RETRY_AFTER_MAX = 900.0
# chat.update failures that mean "leave the original alone, still reply in the thread"
_BLOCKS_REFUSED = ("invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long", "too_many_blocks")
_UPDATE_SOFT = {"message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long", "is_inactive"}


def parse_retry_after(value: str | None, *, now: datetime | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; clamped 1 s..15 min.

    A missing or invalid header gives 1 s plus up to 1 s of jitter, so paused senders do not return in step.
    """
    seconds: float | None = None
    if value is not None:
        text = value.strip()
        if text.isdigit():
            seconds = float(text)
        elif text:
            try:
                when = parsedate_to_datetime(text)
                seconds = (as_utc(when) - as_utc(now or utcnow())).total_seconds()
            except (TypeError, ValueError, IndexError):
                seconds = None
    if seconds is None:
        return RETRY_AFTER_MIN + (rng or random).uniform(0, 1.0)
    return min(max(seconds, RETRY_AFTER_MIN), RETRY_AFTER_MAX)


def classify(status: int | None, data: Any, headers: Any = None, *, what: str = "slack",
             now: datetime | None = None) -> DeliveryError | None:
    """``None`` if delivered, else the :class:`DeliveryError` saying whether and when to retry."""
    headers = headers or {}
    error = data.get("error") if isinstance(data, dict) else None
    if status is None:
        return DeliveryError(f"{what}: no HTTP status", retryable=True)
    if status == 429 or error == "ratelimited":
        wait = parse_retry_after(_header(headers, "Retry-After"), now=now)
        return DeliveryError(f"{what}: rate limited (HTTP {status}), retry after {wait:.0f}s", retryable=True,
                             retry_after=wait)
    if 200 <= status < 300:
        if isinstance(data, dict) and data.get("ok") is True:
            return None
        if data == "ok":  # incoming webhooks answer a plain "ok"
            return None
        detail = error or (_snippet(data) if data else "no body")
        return DeliveryError(f"{what}: {detail} (HTTP {status})", retryable=False)
    if 500 <= status < 600:
        return DeliveryError(f"{what}: server error (HTTP {status}){_detail(error, data)}", retryable=True)
    if 300 <= status < 400:
        return DeliveryError(f"{what}: unexpected redirect (HTTP {status}); check [slack] base_url / webhook_url",
                             retryable=False)
    return DeliveryError(f"{what}: rejected (HTTP {status}){_detail(error, data)}", retryable=False)


def _detail(error: Any, data: Any) -> str:
    if error:
        return f": {error}"
    if isinstance(data, str) and data.strip():
        return f": {_snippet(data)}"
    return ""


def _snippet(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data)[:200]
    return " ".join(text.split())[:120]


def _header(headers: Any, name: str) -> str | None:
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    return None if value is None else str(value)


class _NoRedirects:
    """An aiohttp session as slack-sdk uses it (``request``/``closed``), with redirects switched off."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @property
    def closed(self) -> bool:
        return self._session.closed

    def request(self, method: str, url: str, **kw: Any) -> Any:
        kw["allow_redirects"] = False
        return self._session.request(method, url, **kw)


class SlackChannel:
    """Sends rendered messages to Slack; raises :class:`DeliveryError` on failure."""

    name = "slack"

    def __init__(self, settings: SlackSettings, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.base_url = settings.base_url.rstrip("/") + "/"
        self.timeout = settings.timeout.total_seconds()
        # Slack limits posting per channel (and an incoming webhook per URL): a 429 pauses that channel only.
        self.paused_until: dict[str, datetime] = {}
        self.channel_ids: dict[str, str] = {}  # "#data-alerts" -> "C0123", learned from responses

    # -- the interface ----------------------------------------------------------------------

    def _pause_key(self, message: Outgoing) -> str:
        if self.settings.bot_token is None:
            return "webhook"
        return str(message.address.get("channel", "")).lstrip("#").lower()

    async def send(self, message: Outgoing) -> str | None:
        now = self.clock()
        key = self._pause_key(message)
        until = self.paused_until.get(key)
        if until is not None and now < until:
            wait = (until - now).total_seconds()
            raise DeliveryError(f"slack: {key} paused after a rate limit, {wait:.0f}s left", retryable=True,
                                retry_after=wait)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                             connector=self._connector()) as session:
                if self.settings.bot_token is not None:
                    return await self._send_api(_NoRedirects(session), message)
                return await self._send_webhook(_NoRedirects(session), message)
        except DeliveryError as exc:
            if exc.retry_after is not None:
                self.paused_until[key] = self.clock() + timedelta(seconds=exc.retry_after)
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"slack: {_network_reason(exc)}", retryable=True) from None

    def _connector(self) -> aiohttp.TCPConnector:
        """Connections only to the public addresses the resolver checked (R3.6); a loopback base_url
        that the configuration explicitly allows (tests) is connected to as it is."""
        if self.settings.allow_loopback_base_url:
            return aiohttp.TCPConnector()
        return aiohttp.TCPConnector(resolver=PublicOnlyResolver())

    async def aclose(self) -> None:
        return None

    # -- Web API ----------------------------------------------------------------------------

    def _client(self, session: Any) -> AsyncWebClient:
        assert self.settings.bot_token is not None
        return AsyncWebClient(
            token=self.settings.bot_token.get_secret_value(),
            base_url=self.base_url,
            timeout=int(self.timeout),
            session=session,
            retry_handlers=[],
            logger=_sdk_log,
        )

    async def _call(self, client: AsyncWebClient, method: str, *, query: bool = False, **params: Any) -> dict[str, Any]:
        """One Web API call (a JSON body, or a GET query for read methods); the data or ``DeliveryError``."""
        try:
            if query:
                resp = await client.api_call(method, http_verb="GET", params=params)
            else:
                resp = await client.api_call(method, json=params)
            status, data, headers = resp.status_code, resp.data, resp.headers
        except SlackApiError as exc:
            r = exc.response
            status = getattr(r, "status_code", None) or getattr(r, "status", None)
            data = getattr(r, "data", None)
            headers = getattr(r, "headers", {})
            if not isinstance(data, dict | str):
                data = None
        except (AttributeError, ValueError, TypeError) as exc:
            # slack-sdk fails this way only on an HTTP 200 whose body is not a JSON object: not Slack.
            raise DeliveryError(f"slack {method}: HTTP 200 without a Slack API answer ({type(exc).__name__}); "
                                "check [slack] base_url", retryable=False) from None
        failure = classify(status, data, headers, what=f"slack {method}", now=self.clock())
        if failure is not None:
            raise failure
        assert isinstance(data, dict)
        return data

    async def _send_api(self, session: Any, message: Outgoing) -> str:
        client = self._client(session)
        if message.kind == Kind.action:
            return await self._update_in_place(client, message)
        payload = message.rendered.slack
        key = message.idempotency_key
        thread_channel, thread_ts = _split_ref(message.thread_ref)
        in_thread = message.kind != Kind.firing and thread_ts is not None
        channel = thread_channel if in_thread else str(message.address.get("channel", ""))
        if not channel:
            raise DeliveryError("slack: the receiver has no channel", retryable=False)

        if message.kind == Kind.resolved and in_thread:
            # The original message now says "resolved"; a failure here never loses the reply below.
            try:
                await self._call(client, "chat.update", channel=thread_channel, ts=thread_ts,
                                 text=payload.get("text", ""), blocks=payload.get("blocks", []))
            except DeliveryError as exc:
                if exc.retryable or not any(code in exc.reason for code in _UPDATE_SOFT):
                    raise
                log.warning("slack: original message not updated", extra={"notification_id": message.notification_id,
                                                                          "error": exc.reason})

        if _attempts(message) > 1:
            found = await self._find_posted(client, message, channel=channel, thread_ts=thread_ts if in_thread else None)
            if found:
                return found

        params: dict[str, Any] = {
            "channel": channel,
            "text": payload.get("text", ""),
            "blocks": payload.get("blocks", []),
            "unfurl_links": False,
            "unfurl_media": False,
            "metadata": {"event_type": METADATA_EVENT,
                         "event_payload": {"idempotency_key": key, "instance": message.instance,
                                           "alert_id": message.alert_id or 0, "kind": str(message.kind)}},
        }
        if in_thread:
            params["thread_ts"] = thread_ts
            if message.kind == Kind.updated:
                params["reply_broadcast"] = True
        try:
            data = await self._call(client, "chat.postMessage", **params)
        except DeliveryError as exc:
            if exc.retryable or not any(code in exc.reason for code in _BLOCKS_REFUSED) or not params["blocks"]:
                raise
            # Slack refused the blocks (a limit we did not know of, a custom template): the message still
            # goes, as its text alone — the alert and its dashboard link — rather than dying unseen.
            log.warning("slack: blocks refused, sent as text", extra={"notification_id": message.notification_id,
                                                                    "error": exc.reason})
            params["blocks"] = []
            params["text"] = f"{params['text']}\n(details: {_dashboard_hint(message)})"
            data = await self._call(client, "chat.postMessage", **params)
        cid, ts = str(data.get("channel") or channel), str(data.get("ts") or "")
        if not in_thread:
            self.channel_ids[channel.lstrip("#")] = cid
        return f"{cid}:{ts}"

    async def _update_in_place(self, client: AsyncWebClient, message: Outgoing) -> str:
        """``chat.update`` of the message an ``action`` row names; a message Slack no longer lets us edit
        (deleted, too old) is logged and left alone: there is nothing to retry."""
        channel, ts = _split_ref(str(message.address.get("update_ref") or "") or message.thread_ref)
        if channel is None or ts is None:
            raise DeliveryError("slack: no message to update (its post was not recorded)", retryable=False)
        payload = message.rendered.slack
        try:
            await self._call(client, "chat.update", channel=channel, ts=ts, text=payload.get("text", ""),
                             blocks=payload.get("blocks", []))
        except DeliveryError as exc:
            if exc.retryable or not any(code in exc.reason for code in _UPDATE_SOFT):
                raise
            log.warning("slack: message not updated", extra={"notification_id": message.notification_id,
                                                             "alert_id": message.alert_id, "error": exc.reason})
        return f"{channel}:{ts}"

    async def _find_posted(self, client: AsyncWebClient, message: Outgoing, *, channel: str,
                           thread_ts: str | None) -> str | None:
        """The ``channel:ts`` of a message an earlier attempt of this row already posted, if Slack has it."""
        cid = _as_channel_id(channel) or self.channel_ids.get(channel.lstrip("#")) \
            or await self._lookup_channel(client, channel)
        if cid is None:
            return None
        try:
            if thread_ts is not None:
                data = await self._call(client, "conversations.replies", query=True, channel=cid, ts=thread_ts,
                                        include_all_metadata=True, limit=200)
            else:
                created = message.extra.get("created_at")
                oldest = (as_utc(created) - timedelta(minutes=5)).timestamp() if created else 0
                data = await self._call(client, "conversations.history", query=True, channel=cid,
                                        oldest=f"{oldest:.6f}",
                                        include_all_metadata=True, limit=200)
        except DeliveryError as exc:
            log.info("slack: could not check for an earlier post; posting",
                     extra={"notification_id": message.notification_id, "error": exc.reason})
            return None
        for m in data.get("messages") or []:
            meta = m.get("metadata") or {}
            mine = meta.get("event_payload") or {}
            # the key and this database's id: another deployment posting to the channel has the same keys
            # (a post without an id is from before ids: ours, most likely, caught by the upgrade)
            if meta.get("event_type") == METADATA_EVENT and mine.get("idempotency_key") == message.idempotency_key \
                    and mine.get("instance", message.instance) == message.instance:
                log.info("slack: earlier attempt had been posted; not posting again",
                         extra={"notification_id": message.notification_id})
                return f"{cid}:{m.get('ts')}"
        return None

    async def _lookup_channel(self, client: AsyncWebClient, channel: str) -> str | None:
        """A channel name's id from ``conversations.list`` (scope ``channels:read``); ``None`` if unknown."""
        name = channel.lstrip("#")
        cursor = None
        try:
            for _ in range(20):  # at most 20 pages of 1,000 channels
                params: dict[str, Any] = {"types": "public_channel,private_channel", "exclude_archived": True,
                                          "limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                data = await self._call(client, "conversations.list", query=True, **params)
                for ch in data.get("channels") or []:
                    if isinstance(ch, dict) and ch.get("name") and ch.get("id"):
                        self.channel_ids.setdefault(str(ch["name"]), str(ch["id"]))
                cursor = (data.get("response_metadata") or {}).get("next_cursor")
                if name in self.channel_ids or not cursor:
                    break
        except DeliveryError as exc:
            log.info("slack: could not list channels", extra={"error": exc.reason})
        return self.channel_ids.get(name)

    # -- incoming webhook -------------------------------------------------------------------

    async def _send_webhook(self, session: Any, message: Outgoing) -> str:
        assert self.settings.webhook_url is not None
        if message.kind == Kind.action:
            raise DeliveryError("slack: an incoming webhook cannot update a message; set [slack] bot_token",
                                retryable=False)
        client = AsyncWebhookClient(
            url=self.settings.webhook_url.get_secret_value(),
            timeout=int(self.timeout),
            session=session,
            retry_handlers=[],
            logger=_sdk_log,
        )
        payload = message.rendered.slack
        resp = await client.send(text=payload.get("text", ""), blocks=payload.get("blocks", []),
                                 unfurl_links=False, unfurl_media=False)
        failure = classify(resp.status_code, resp.body, resp.headers, what="slack webhook", now=self.clock())
        if failure is not None:
            raise failure
        return "webhook"


def _attempts(message: Outgoing) -> int:
    try:
        return int(message.extra.get("attempts") or 1)
    except (TypeError, ValueError):
        return 1


def _split_ref(ref: str | None) -> tuple[str | None, str | None]:
    if not ref or ":" not in ref:
        return None, None
    channel, _, ts = ref.partition(":")
    return (channel, ts) if channel and ts else (None, None)


def _as_channel_id(channel: str) -> str | None:
    name = channel.lstrip("#")
    return name if name[:1] in "CGD" and name.isalnum() and name.isupper() else None


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, NonPublicAddress):
        return str(exc.os_error)  # the host and what it resolved to (no path: a webhook URL's path is its secret)
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__


def _dashboard_hint(message: Outgoing) -> str:
    """Where the whole message can be read when Slack refused its blocks: the alert's page, else the dashboard."""
    for block in (message.rendered.slack or {}).get("blocks") or []:
        for el in (block.get("elements") or []) if isinstance(block, dict) else []:
            text = el.get("text") if isinstance(el, dict) else None
            if isinstance(text, str) and "|alert #" in text:
                start = text.rfind("<", 0, text.index("|alert #"))
                return text[start:text.index(">", start) + 1] if start != -1 else "the dashboard"
    return "the dashboard"
