"""Publishes every stored Observation to ``v1.1/Datastreams(<id>)/Observations``.

The sink hands over each batch once the warehouse has acknowledged it
(:meth:`ObservationPublisher.stored`), so a subscriber sees only readings that a GET can
return, and a reading dropped as a duplicate is not announced twice. The payload is the
Observation exactly as the SensorThings API writes it (``sensorthings.service.document``).

The broker delivers a topic's messages only to clients whose roles allow it
(``publishClientReceive``): each Datastream topic belongs to the role ``dataset:<owner>/<tool>/
<dataset>``, which the operator gives to the owner's group, to the groups of the municipalities
the dataset is shared with and, for open data, to the anonymous group. Datastreams appear
with new sensors, so the publisher adds a topic's ACL to its dataset's role the first time it
sends there (one round trip for the new topics of a batch, then remembered). The broker
disconnects every client of a role whose ACLs change; the publisher therefore waits
``new_topic_grace`` seconds after adding topics, so that subscribers are back (clients reconnect
by themselves) before the first Observation of a new Datastream goes out.

Bounded: at most ``max_pending_rows`` rows wait (a batch that would exceed it is dropped and
counted, never the sink held up); the client reconnects by itself, and what waits is sent once
it is back, up to that bound. Delivery to the broker is QoS 0: an Observation published while
the connection breaks can be lost — the warehouse keeps it, MQTT only announces it.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from urbanstack.runtime.api.sensorthings.graph import stable_id
from urbanstack.runtime.api.sensorthings.service import document, observation_entity
from urbanstack.runtime.mqtt.client import BrokerUnavailable, CommandError, Connection

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CHUNK = 1000                 # messages between two waits for the socket (backpressure)
ROWS_PER_ROUND = 2000        # rows turned into messages at a time
ROLE_RETRY_SECONDS = 30.0    # a dataset whose role is missing (not provisioned yet) is asked again after this


def role_of(dataset_ref: str) -> str:
    """The broker role whose members receive a dataset's Observations."""
    return f"dataset:{dataset_ref}"


def topic_of(datastream_id: int) -> str:
    return f"v1.1/Datastreams({datastream_id})/Observations"


def _text(value: Any, column_type: str) -> str | None:
    """A stored value as the warehouse's ``toString`` writes it (what the API's answer is built from)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        digits = int(column_type.split("(", 2)[-1][0]) if "DateTime64(" in column_type else 0
        value = value.astimezone(timezone.utc)
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return text + (f".{value.microsecond:06d}"[: digits + 1] if digits else "")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def topics_of(dataset_ref: str, schema, columns: list[list]) -> set[str]:
    """The Datastream topics the rows have Observations for."""
    names = list(schema.column_names)
    sensors = columns[names.index("sensor_id")]
    found = set()
    for field in schema.fields.values():
        values = columns[names.index(field.name)]
        for sensor in {sensor for sensor, value in zip(sensors, values) if value is not None}:
            found.add(topic_of(stable_id("Datastream", dataset_ref, sensor, field.name)))
    return found


def messages(base: str, dataset_ref: str, schema, columns: list[list]) -> list[tuple[str, bytes]]:
    """(topic, payload) for every non-empty field value of the rows (sink column order)."""
    from urbanstack.runtime.sink import base_type

    names = list(schema.column_names)
    ids, sensors, stamps = columns[names.index("event_id")], columns[names.index("sensor_id")], \
        columns[names.index("observed_at")]
    lons = columns[names.index("lon")] if "lon" in names else [None] * len(ids)
    lats = columns[names.index("lat")] if "lat" in names else [None] * len(ids)
    scale = 10 ** (6 - schema.precision)
    out = []
    for field in schema.fields.values():
        values = columns[names.index(field.name)]
        kind = base_type(field.type)
        for i, value in enumerate(values):
            if value is None:
                continue
            at = EPOCH + timedelta(microseconds=stamps[i] * scale)
            entity = observation_entity(dataset_ref, sensors[i], field.name, kind, ids[i], at,
                                        _text(value, field.type), lons[i], lats[i])
            payload = json.dumps(document(base, entity), ensure_ascii=False, separators=(",", ":"))
            out.append((topic_of(entity.extra["datastream"]), payload.encode("utf-8")))
    return out


class ObservationPublisher:
    def __init__(self, host: str, port: int, user: str, password: str, base: str, *,
                 max_pending_rows: int = 200_000, known_topics: int = 200_000, new_topic_grace: float = 3.0):
        self.base = base.rstrip("/")
        self.max_pending_rows = max_pending_rows
        self.new_topic_grace = new_topic_grace
        # One client id per publisher: sink replicas must not take each other's connection over.
        self._connection = Connection(host, port, user, password,
                                      client_id=f"urbanstack-sta-publisher-{uuid.uuid4().hex[:12]}")
        self._queue: collections.deque = collections.deque()
        self._pending = 0
        self._ready = threading.Condition()
        self._known: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._known_max = known_topics
        self._missing_roles: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0
        self.dropped = 0
        self._warned = 0.0

    # the sink's side --------------------------------------------------------------
    def stored(self, target, schema, rows) -> None:
        """Called by the sink after a batch's insert; returns at once."""
        n = len(rows)
        if not n or schema is None:
            return
        dataset_ref = f"{target.tenant}/{target.tool}/{target.dataset}"
        with self._ready:
            if self._pending + n > self.max_pending_rows:
                self.dropped += n
                self._warn(f"MQTT: {n} stored rows of {dataset_ref} not announced: {self._pending} rows wait "
                           f"already (limit {self.max_pending_rows}; is the broker reachable?)")
                return
            # [dataset, schema, columns, rows sent so far, topics allowed]
            self._queue.append([dataset_ref, schema, [list(column) for column in rows.columns], 0, False])
            self._pending += n
            self._ready.notify()

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning(text)

    # the publishing thread ----------------------------------------------------------
    def start(self) -> "ObservationPublisher":
        self._connection.start()
        self._thread = threading.Thread(target=self._run, name="sta-mqtt-publisher", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        if self._thread:
            self._thread.join(timeout)
        self._connection.close()

    def idle(self) -> bool:
        with self._ready:
            return not self._queue and self._pending == 0

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._ready:
                while not self._queue and not self._stop.is_set():
                    self._ready.wait(1.0)
                if self._stop.is_set():
                    return
                item = self._queue[0]
                dataset_ref, columns = item[0], item[2]
            if not self._connection.wait_connected(1.0):
                self._warn(f"MQTT: not connected to {self._connection.host}:{self._connection.port}"
                           + (f" (login refused: {self._connection.refused})" if self._connection.refused else "")
                           + f"; {self._pending} stored rows wait")
                continue
            try:
                self._allow_waiting()
                self._send(item)
            except BrokerUnavailable as exc:
                self._warn(f"MQTT: {exc}; retrying")
                continue
            except Exception:  # noqa: BLE001 - a batch that cannot be written must not stop the thread
                log.exception("MQTT: the Observations of a batch of %s could not be published", dataset_ref)
            with self._ready:
                self._queue.popleft()
                self._pending -= len(columns[0]) if columns else 0

    def _allow_waiting(self) -> None:
        """The topics of every waiting batch join their roles together, followed by one grace
        for the disconnected subscribers, instead of a grace per batch."""
        with self._ready:
            waiting = [item for item in self._queue if not item[4]]
        added = False
        for item in waiting:
            added = self._allow(sorted(topics_of(item[0], item[1], item[2])), item[0]) or added
            item[4] = True
        if added and self.new_topic_grace:
            self._stop.wait(self.new_topic_grace)

    def _send(self, item: list) -> None:
        """Sends a batch from the row it reached (after a broken connection: where it stopped)."""
        dataset_ref, schema, columns = item[0], item[1], item[2]
        # Some thousand rows at a time: the messages of a 50,000-row batch are never all in memory.
        for start in range(item[3], len(columns[0]), ROWS_PER_ROUND):
            outgoing = messages(self.base, dataset_ref, schema,
                                [column[start:start + ROWS_PER_ROUND] for column in columns])
            if self._allow([topic for topic, _ in outgoing], dataset_ref) and self.new_topic_grace:
                # The broker disconnects every client holding a role whose ACLs changed; they reconnect
                # by themselves (about a second for paho and mqtt.js): wait for them before sending.
                self._stop.wait(self.new_topic_grace)
            for i, (topic, payload) in enumerate(outgoing, 1):
                if not self._connection.publish(topic, payload):
                    raise BrokerUnavailable("connection lost while publishing")
                if i % CHUNK == 0:
                    self._connection.flush()
            self._connection.flush()
            self.published += len(outgoing)
            item[3] = start + ROWS_PER_ROUND

    def _allow(self, topics: list[str], dataset_ref: str) -> bool:
        """Adds the ACL of every topic not seen before to the dataset's role (before the first
        message); True when the broker took a new one."""
        role = role_of(dataset_ref)
        missing_since = self._missing_roles.get(role)
        if missing_since and time.monotonic() - missing_since < ROLE_RETRY_SECONDS:
            return False
        new = list(dict.fromkeys(topic for topic in topics if topic not in self._known))
        if not new:
            return False
        added = False
        commands = [{"command": "addRoleACL", "rolename": role, "acltype": "publishClientReceive",
                     "topic": topic, "priority": 0, "allow": True} for topic in new]
        for answer in self._connection.commands(commands, check=False):
            error = str(answer.get("error") or "")
            if "not found" in error.lower():
                self._missing_roles[role] = time.monotonic()
                self._warn(f"MQTT: no broker role {role} yet (the operator creates it with the municipality); "
                           f"its Observations reach no subscriber until then")
                return False
            if error and "already" not in error.lower():
                raise CommandError("addRoleACL", error)
            added = added or not error
        self._missing_roles.pop(role, None)
        for topic in new:
            self._known[topic] = None
        while len(self._known) > self._known_max:
            self._known.popitem(last=False)
        return added
