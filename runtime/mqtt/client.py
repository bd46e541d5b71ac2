"""A connection to the MQTT broker, and its dynamic-security plugin's commands.

The plugin is administered over MQTT itself: a command is a JSON document published to
``$CONTROL/dynamic-security/v1``; the answer arrives on ``…/response`` with the command's
``correlationData``. :class:`Connection` keeps one client with paho's automatic reconnect,
and :meth:`Connection.commands` waits a bounded time for the answers. Passwords are sent to
the broker and never logged or put into an error message.
"""

from __future__ import annotations

import itertools
import json
import select
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt

CONTROL = "$CONTROL/dynamic-security/v1"
RESPONSE = CONTROL + "/response"


class _PollSelect:
    """paho's network loop waits with ``select.select``, which cannot watch a descriptor numbered
    1024 or higher (FD_SETSIZE): it raises ValueError, paho takes that for a lost connection and
    reconnects forever without ever reading the broker's answer. A process with the embedded
    ClickHouse engine keeps a file open for every table (its deduplication log), so from about 250
    municipalities on the operator's new sockets get such numbers and every MQTT login check timed
    out. paho gets this stand-in, with the same signature and errors, built on ``poll()``."""

    error = OSError

    @staticmethod
    def _fd(obj) -> int:
        if isinstance(obj, int):
            return obj
        fileno = getattr(obj, "fileno", None)
        if fileno is None:
            raise TypeError(f"not a socket: {obj!r}")
        return fileno()

    @classmethod
    def select(cls, rlist, wlist, xlist, timeout=None):
        poller = select.poll()
        masks: dict[int, int] = {}
        for obj in rlist:
            fd = cls._fd(obj)
            masks[fd] = masks.get(fd, 0) | select.POLLIN | select.POLLPRI
        for obj in wlist:
            fd = cls._fd(obj)
            masks[fd] = masks.get(fd, 0) | select.POLLOUT
        for obj in xlist:
            fd = cls._fd(obj)
            masks[fd] = masks.get(fd, 0) | select.POLLPRI
        for fd, mask in masks.items():
            if fd < 0:
                raise ValueError("file descriptor cannot be a negative integer")
            poller.register(fd, mask)
        ready = dict(poller.poll(None if timeout is None else max(0.0, timeout) * 1000))
        broken = select.POLLERR | select.POLLHUP | select.POLLNVAL
        return ([o for o in rlist if ready.get(cls._fd(o), 0) & (select.POLLIN | select.POLLPRI | broken)],
                [o for o in wlist if ready.get(cls._fd(o), 0) & (select.POLLOUT | broken)],
                [o for o in xlist if ready.get(cls._fd(o), 0) & select.POLLPRI])


mqtt.select = _PollSelect   # the one name paho's client module waits with (paho-mqtt 2.x: select.select)


class BrokerUnavailable(RuntimeError):
    """The broker did not answer (connection refused, timeout)."""


class CommandError(RuntimeError):
    """The plugin refused a command (``error`` is its message, e.g. "Client not found")."""

    def __init__(self, command: str, error: str):
        super().__init__(f"{command}: {error}")
        self.command, self.error = command, error


def new_client(client_id: str | None = None) -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"urbanstack-{uuid.uuid4().hex[:12]}",
                       protocol=mqtt.MQTTv311, clean_session=True)


def authenticates(host: str, port: int, user: str | None, password: str | None, timeout: float = 5.0) -> bool:
    """Whether the broker accepts this login (None, None: anonymous); BrokerUnavailable when
    it does not answer within ``timeout``."""
    client = new_client()
    if user is not None:
        client.username_pw_set(user, password)
    answer: dict[str, Any] = {}
    done = threading.Event()

    def connected(_client, _userdata, _flags, reason, _properties):
        answer["reason"] = reason
        done.set()

    client.on_connect = connected
    try:
        client.connect(host, port, keepalive=10)
    except OSError as exc:
        raise BrokerUnavailable(f"MQTT broker {host}:{port}: {exc.strerror or exc}") from None
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise BrokerUnavailable(f"MQTT broker {host}:{port}: no answer to CONNECT within {timeout:.0f} s")
        return not answer["reason"].is_failure
    finally:
        client.disconnect()
        client.loop_stop()


class Connection:
    """One logged-in client with automatic reconnects; thread-safe."""

    def __init__(self, host: str, port: int, user: str, password: str, *, client_id: str | None = None,
                 on_connected=None):
        self.host, self.port = host, port
        self._client = new_client(client_id)
        self._client.username_pw_set(user, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_queued_messages_set(1000)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_message = self._message
        self._on_connected = on_connected
        self._up = threading.Event()
        self.refused: str | None = None      # the broker's reason when it refused the login
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list]] = {}
        self._ids = itertools.count(1)
        self._started = False
        self._last = None

    # lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False

    def wait_connected(self, timeout: float) -> bool:
        self.start()
        return self._up.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def _connected(self, client, _userdata, _flags, reason, _properties):
        if reason.is_failure:
            self.refused = str(reason)
            return
        self.refused = None
        client.subscribe(RESPONSE, qos=1)
        self._up.set()
        if self._on_connected:
            self._on_connected()

    def _disconnected(self, _client, _userdata, _flags, _reason, _properties):
        self._up.clear()

    # publishing -----------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 0) -> bool:
        """Hand one message to the client; False when it is not connected (nothing queued)."""
        if not self._up.is_set():
            return False
        info = self._client.publish(topic, payload, qos=qos)
        self._last = info
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the messages handed over so far are written to the socket."""
        last, self._last = self._last, None
        if last is None:
            return
        try:
            last.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise BrokerUnavailable(f"MQTT broker {self.host}:{self.port}: {exc}") from None
        if not last.is_published():
            raise BrokerUnavailable(f"MQTT broker {self.host}:{self.port}: messages not written within "
                                    f"{timeout:.0f} s")

    # dynamic-security commands --------------------------------------------------
    def _message(self, _client, _userdata, message):
        if message.topic != RESPONSE:
            return
        try:
            responses = json.loads(message.payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        with self._lock:
            for response in responses:
                waiter = self._waiting.get(str(response.get("correlationData")))
                if waiter:
                    waiter[1].append(response)
                    waiter[0].set()

    def commands(self, commands: list[dict[str, Any]], timeout: float = 10.0, *,
                 check: bool = True) -> list[dict[str, Any]]:
        """Send commands (each ``{"command": …, …}``) and return their answers in order; raise
        CommandError for the first refused one (unless ``check`` is False: then each answer's
        ``error`` says) and BrokerUnavailable without an answer in time. The plugin runs every
        command of a list, whether an earlier one failed or not."""
        if not commands:
            return []
        if not self.wait_connected(timeout):
            reason = f"login refused ({self.refused})" if self.refused else f"not connected within {timeout:.0f} s"
            raise BrokerUnavailable(f"MQTT broker {self.host}:{self.port}: {reason}")
        tagged, waiters = [], []
        with self._lock:
            for command in commands:
                tag = f"c{next(self._ids)}"
                event = threading.Event()
                self._waiting[tag] = (event, [])
                waiters.append(tag)
                tagged.append({**command, "correlationData": tag})
        try:
            self._client.publish(CONTROL, json.dumps({"commands": tagged}).encode(), qos=1)
            answers = []
            for tag, command in zip(waiters, commands):
                event, found = self._waiting[tag]
                if not event.wait(timeout):
                    raise BrokerUnavailable(f"MQTT broker {self.host}:{self.port}: no answer to "
                                            f"{command['command']} within {timeout:.0f} s")
                answers.append(found[0])
        finally:
            with self._lock:
                for tag in waiters:
                    self._waiting.pop(tag, None)
        for command, answer in zip(commands, answers):
            if check and answer.get("error"):
                raise CommandError(command["command"], str(answer["error"]))
        return answers

    def command(self, name: str, timeout: float = 10.0, **arguments) -> dict[str, Any]:
        """One command; its ``data`` (empty when it has none)."""
        return self.commands([{"command": name, **arguments}], timeout)[0].get("data") or {}
