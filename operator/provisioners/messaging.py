"""MQTT: the tenant's broker client, its group, and who receives its datasets' Observations.

The broker is mosquitto with its dynamic-security plugin (docs/sensorthings.md, *MQTT*),
administered over MQTT as the platform's admin. Per municipality:

- a client ``muni-<slug>`` (as in Kafka) with the password ``mqtt-password`` of the tenant
  Secret, member of the group ``municipality:<slug>``, which holds the role
  ``sta-subscriber`` (may subscribe under ``v1.1/``; what it then receives is decided per
  message by the dataset roles below);
- a role ``dataset:<slug>/<tool>/<dataset>`` per dataset; the sink's publisher adds each
  Datastream topic of the dataset to it (``publishClientReceive``) when it first sends there;
- that role in the municipality's own group, in the groups of the municipalities the dataset
  is shared with and, for open data, in the group ``open-data``: the anonymous clients' group,
  of which every tenant client is a member too (a token reads open data as well, as in REST).
  The municipality that owns a dataset answers for every group holding its role, as the Kafka
  provisioner answers for the share ACLs on its topics.

Nobody but the admin may publish under ``v1.1/`` (the plugin denies by default). A password
cannot be read back: observe logs in as the tenant with the Secret's password.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from urbanstack.operator import naming
from urbanstack.operator.provisioners.base import BackendUnavailable, Diff, DiffBuilder, Difference, unknown_action
from urbanstack.runtime.mqtt.client import BrokerUnavailable, CommandError, Connection, authenticates

BACKEND = "MQTT"
SUBSCRIBER_ROLE = "sta-subscriber"
OPEN_GROUP = "open-data"   # the anonymous clients' group; every tenant client is a member too
GROUP_PREFIX = "municipality:"
ROLE_PREFIX = "dataset:"
PASSWORD_KEY = "mqtt-password"
SUBSCRIBE_ACLS = ({"acltype": "subscribePattern", "topic": "v1.1/#", "priority": 0, "allow": True},
                  {"acltype": "unsubscribePattern", "topic": "v1.1/#", "priority": 0, "allow": True})


@dataclass(frozen=True)
class MessagingPart:
    slug: str
    user: str
    group: str
    readers: tuple[tuple[str, tuple[str, ...]], ...]   # (dataset role, slugs of the groups that receive it)
    public: tuple[str, ...]                            # dataset roles of open data (group open-data)
    password_key: str = PASSWORD_KEY

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(role for role, _ in self.readers)

    @property
    def role_prefix(self) -> str:
        return f"{ROLE_PREFIX}{self.slug}/"


def group_of(slug: str) -> str:
    return f"{GROUP_PREFIX}{slug}"


def messaging_part(municipality, datasets: Sequence[tuple[str, str]]) -> MessagingPart:
    """The plan for ``municipality`` (its spec's shares) and its enabled ``datasets`` (tool, dataset)."""
    slug = municipality.slug
    readers, public = [], []
    for tool, dataset in datasets:
        role = f"{ROLE_PREFIX}{slug}/{tool}/{dataset}"
        shares = [s for s in municipality.spec.shares if s.tool == tool and s.dataset == dataset]
        others = sorted({other for share in shares for other in share.municipalities} - {slug})
        readers.append((role, (slug, *others)))
        if any(share.public for share in shares):
            public.append(role)
    return MessagingPart(slug=slug, user=naming.kafka_user(slug), group=group_of(slug),
                         readers=tuple(sorted(readers)), public=tuple(sorted(public)))


@dataclass(frozen=True)
class Broker:
    """What observe read from the plugin (pure data, so tests can feed it)."""
    roles: frozenset[str]
    groups: Mapping[str, frozenset[str]]    # group -> its roles
    anonymous_group: str | None
    client_groups: frozenset[str] | None    # None: no such client
    authenticates: bool | None              # None: not tried


@dataclass(frozen=True)
class BrokerSnapshot:
    """The whole plugin configuration the sweep compares every tenant against."""
    roles: frozenset[str]
    groups: Mapping[str, frozenset[str]]
    anonymous_group: str | None
    clients: Mapping[str, frozenset[str]]   # username -> its groups
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    def broker_for(self, part: MessagingPart) -> Broker:
        """What ``messaging_differences`` reads for ``part``: its own datasets' roles, the groups that
        hold one of them or that it wants, and the shared subscriber role. It gives the same diff as
        the whole configuration, without scanning every tenant's roles and groups per tenant."""
        prefix = part.role_prefix
        if not (prefix.startswith(ROLE_PREFIX) and prefix.endswith("/") and prefix.count("/") == 1):
            return Broker(roles=self.roles, groups=self.groups, anonymous_group=self.anonymous_group,
                          client_groups=self.clients.get(part.user), authenticates=None)
        if not self._index:
            roles: dict[str, set[str]] = {}
            holders: dict[str, set[str]] = {}
            for role in self.roles:
                head, slash, _ = role.partition("/")
                if slash:
                    roles.setdefault(head + "/", set()).add(role)
            for group, granted in self.groups.items():
                for role in granted:
                    head, slash, _ = role.partition("/")
                    if slash:
                        holders.setdefault(head + "/", set()).add(group)
            self._index.update(roles=roles, holders=holders)
        wanted = {part.group, OPEN_GROUP, *(group_of(slug) for _, slugs in part.readers for slug in slugs)}
        relevant = self._index["holders"].get(prefix, set()) | wanted
        return Broker(roles=frozenset(self._index["roles"].get(prefix, set()) | ({SUBSCRIBER_ROLE} & self.roles)),
                      groups={g: self.groups[g] for g in relevant if g in self.groups},
                      anonymous_group=self.anonymous_group, client_groups=self.clients.get(part.user),
                      authenticates=None)


def messaging_differences(part: MessagingPart, broker: Broker) -> Diff:
    """The plan against what the broker holds, in the order the repairs must run."""
    found = DiffBuilder()
    if SUBSCRIBER_ROLE not in broker.roles:
        found.add(f"role {SUBSCRIBER_ROLE}", "exists", True, False, "create_role", (SUBSCRIBER_ROLE, SUBSCRIBE_ACLS))
    for role in part.roles:
        if role not in broker.roles:
            found.add(f"role {role}", "exists", True, False, "create_role", (role, ()))
    wanted_groups: dict[str, set[str]] = {part.group: {SUBSCRIBER_ROLE}}
    for role, slugs in part.readers:
        for slug in slugs:
            wanted_groups.setdefault(group_of(slug), set()).add(role)
    wanted_groups.setdefault(OPEN_GROUP, set()).update(part.public)
    wanted_groups[OPEN_GROUP].add(SUBSCRIBER_ROLE)
    for group in sorted(wanted_groups):
        if group not in broker.groups:
            found.add(f"group {group}", "exists", True, False, "create_group", group)
    if broker.anonymous_group != OPEN_GROUP:
        found.add("anonymous clients", "group", OPEN_GROUP, broker.anonymous_group, "set_anonymous_group")
    if broker.client_groups is None:
        found.add(f"client {part.user}", "exists", True, False, "create_client")
    else:
        if broker.authenticates is False:
            found.add(f"client {part.user}", "password", "the tenant Secret's password authenticates", "rejected",
                      "set_password")
        for group in (part.group, OPEN_GROUP):
            if group not in broker.client_groups:
                found.add(f"client {part.user}", f"member of {group}", True, False, "add_group_client", group)
    # Roles of this municipality's datasets in any group: exactly the planned ones (shares revoked elsewhere).
    for group in sorted(set(broker.groups) | set(wanted_groups)):
        have = {role for role in broker.groups.get(group, ()) if role.startswith(part.role_prefix)}
        want = {role for role in wanted_groups.get(group, ()) if role.startswith(part.role_prefix)}
        if group in (part.group, OPEN_GROUP) and SUBSCRIBER_ROLE in wanted_groups.get(group, ()):
            if SUBSCRIBER_ROLE not in broker.groups.get(group, ()):
                found.add(f"group {group}", f"role {SUBSCRIBER_ROLE}", True, False, "add_group_role",
                          (group, SUBSCRIBER_ROLE))
        for role in sorted(want - have):
            found.add(f"group {group}", f"role {role}", True, False, "add_group_role", (group, role))
        for role in sorted(have - want):
            found.add(f"group {group}", f"role {role}", False, True, "remove_group_role", (group, role))
    for role in sorted(r for r in broker.roles if r.startswith(part.role_prefix) and r not in part.roles):
        found.add(f"role {role}", "exists", False, True, "delete_role", role)
    return found.diff()


class MessagingProvisioner:
    name = BACKEND
    condition = "MessagingReady"

    def __init__(self, host: str, port: int, admin_user: str, admin_password: str, timeout: float = 10.0):
        self.host, self.port, self.timeout = host, port, timeout
        self._admin = (admin_user, admin_password)
        self._connection: Connection | None = None

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = Connection(self.host, self.port, *self._admin,
                                          client_id=f"urbanstack-operator-{id(self):x}")
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _run(self, commands: list[dict], *, check: bool = True) -> list[dict]:
        try:
            return self.connection.commands(commands, self.timeout, check=check)
        except BrokerUnavailable as exc:
            raise BackendUnavailable(BACKEND, str(exc)) from None
        except CommandError as exc:
            raise RuntimeError(f"the MQTT broker refused {exc}") from None

    # observe ----------------------------------------------------------------
    def _broker(self, part: MessagingPart, password: str) -> Broker:
        *config, client = self._run([*_CONFIG_COMMANDS, {"command": "getClient", "username": part.user}],
                                    check=False)
        roles, groups, anonymous = _config(config)
        client_groups = None
        if not client.get("error"):
            client_groups = _groups_of((client.get("data") or {}).get("client", {}))
        elif "not found" not in str(client["error"]).lower():
            raise RuntimeError(f"the MQTT broker refused getClient: {client['error']}")
        return Broker(roles=roles, groups=groups, anonymous_group=anonymous, client_groups=client_groups,
                      authenticates=None if client_groups is None else self._authenticates(part.user, password))

    def _authenticates(self, user: str, password: str) -> bool:
        try:
            return authenticates(self.host, self.port, user, password, timeout=self.timeout)
        except BrokerUnavailable as exc:
            raise BackendUnavailable(BACKEND, f"checking the password of {user}: {exc}") from None

    def observe(self, part: MessagingPart, credentials: Mapping[str, str]) -> Diff:
        return messaging_differences(part, self._broker(part, _password(part, credentials)))

    # the drift sweep (operator/sweep.py) ---------------------------------------
    def snapshot(self, parts: Sequence[MessagingPart]) -> "BrokerSnapshot":
        """Roles, groups with their roles, the anonymous group and every client's groups: one
        message of four commands per sweep, whatever the number of tenants. Passwords are not
        checked here (a login per tenant); the rotating audit's full observe does that."""
        *config, clients = self._run(
            [*_CONFIG_COMMANDS, {"command": "listClients", "verbose": True, "count": -1, "offset": 0}], check=False)
        roles, groups, anonymous = _config(config)
        if clients.get("error"):
            raise RuntimeError(f"the MQTT broker refused listClients: {clients['error']}")
        return BrokerSnapshot(
            roles=roles, groups=groups, anonymous_group=anonymous,
            clients={c["username"]: _groups_of(c)
                     for c in (clients.get("data") or {}).get("clients", []) if isinstance(c, dict)})

    def observe_from(self, snapshot: "BrokerSnapshot", part: MessagingPart,
                     credentials: Mapping[str, str] | None = None) -> Diff:
        return messaging_differences(part, snapshot.broker_for(part))

    # apply --------------------------------------------------------------------
    def apply(self, part: MessagingPart, diff: Diff, credentials: Mapping[str, str]) -> list[str]:
        """Every repair the diff names, as one message of plugin commands in the diff's order (roles
        and groups before the client and grants that name them): one round trip per tenant, not one
        per command. The plugin runs each command of the list whatever an earlier one answered."""
        planned = [self._command_for(difference, part, credentials) for difference in diff]
        return self._run_all(planned)

    def _run_all(self, planned: list[tuple[dict, str | None, str]]) -> list[str]:
        """Run (command, tolerated error text, what it did) in one message; an answer with an error
        it does not tolerate ("already", "not found") fails the apply after all have run."""
        answers = self._run([command for command, _, _ in planned], check=False)
        refused = []
        for (command, ok, _), answer in zip(planned, answers):
            error = str(answer.get("error") or "")
            if error and (ok is None or ok not in error.lower()):
                refused.append(f"{command['command']}: {error}")
        if refused:
            raise RuntimeError(f"the MQTT broker refused {'; '.join(refused)}")
        return [done for _, _, done in planned]

    def _command_for(self, difference: Difference, part: MessagingPart,
                     credentials: Mapping[str, str]) -> tuple[dict, str | None, str]:
        action, payload = difference.action, difference.payload
        if action == "create_role":
            role, acls = payload
            return {"command": "createRole", "rolename": role, "acls": list(acls)}, "already", f"created role {role}"
        if action == "create_group":
            return {"command": "createGroup", "groupname": payload}, "already", f"created group {payload}"
        if action == "set_anonymous_group":
            return ({"command": "setAnonymousGroup", "groupname": OPEN_GROUP}, None,
                    f"anonymous clients are now in group {OPEN_GROUP}")
        if action == "create_client":
            return ({"command": "createClient", "username": part.user, "password": _password(part, credentials),
                     "textname": f"municipality {part.slug}",
                     "groups": [{"groupname": part.group}, {"groupname": OPEN_GROUP}]}, "already",
                    f"created client {part.user} with the tenant Secret's password")
        if action == "set_password":
            return ({"command": "setClientPassword", "username": part.user,
                     "password": _password(part, credentials)}, None,
                    f"set the password of {part.user} from the tenant Secret")
        if action == "add_group_client":
            return ({"command": "addGroupClient", "groupname": payload, "username": part.user}, "already",
                    f"added {part.user} to {payload}")
        if action == "add_group_role":
            group, role = payload
            return ({"command": "addGroupRole", "groupname": group, "rolename": role}, "already",
                    f"granted {role} to group {group}")
        if action == "remove_group_role":
            group, role = payload
            return ({"command": "removeGroupRole", "groupname": group, "rolename": role}, "not found",
                    f"revoked {role} from group {group}")
        if action == "delete_role":
            return {"command": "deleteRole", "rolename": payload}, "not found", f"deleted role {payload}"
        raise unknown_action(BACKEND, difference)

    # delete -------------------------------------------------------------------
    def delete(self, part: MessagingPart, *, keep_data: bool) -> list[str]:
        """Remove the client, its group and its datasets' roles (so every share and the open-data
        grant with them), in one message. The broker keeps no data, so ``keep_data`` changes
        nothing here."""
        roles = (self._run([{"command": "listRoles", "verbose": False, "count": -1, "offset": 0}])[0]
                 .get("data") or {}).get("roles", [])
        return self._run_all(
            [({"command": "deleteClient", "username": part.user}, "not found", f"deleted client {part.user}"),
             ({"command": "deleteGroup", "groupname": part.group}, "not found", f"deleted group {part.group}")]
            + [({"command": "deleteRole", "rolename": role}, "not found", f"deleted role {role}")
               for role in sorted(roles) if role.startswith(part.role_prefix)])


# What every observation of the plugin reads first: roles, groups with their roles, the anonymous group.
_CONFIG_COMMANDS = (
    {"command": "listRoles", "verbose": False, "count": -1, "offset": 0},
    {"command": "listGroups", "verbose": True, "count": -1, "offset": 0},
    {"command": "getAnonymousGroup"},
)


def _config(answers: Sequence[dict]) -> tuple[frozenset[str], dict[str, frozenset[str]], str | None]:
    """The answers to ``_CONFIG_COMMANDS``: roles, group -> its roles, the anonymous group."""
    for answer in answers:
        if answer.get("error"):
            raise RuntimeError(f"the MQTT broker refused {answer.get('command')}: {answer['error']}")
    roles, groups, anonymous = answers
    return (frozenset((roles.get("data") or {}).get("roles", [])),
            {g["groupname"]: frozenset(r["rolename"] for r in g.get("roles", []))
             for g in (groups.get("data") or {}).get("groups", [])},
            ((anonymous.get("data") or {}).get("group") or {}).get("groupname"))


def _groups_of(client: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(g["groupname"] for g in client.get("groups", []))


def _password(part: MessagingPart, credentials: Mapping[str, str]) -> str:
    password = credentials.get(part.password_key)
    if not password:
        raise RuntimeError(f"the tenant Secret has no key {part.password_key!r} for MQTT client {part.user}; "
                           f"the runtime provisioner creates it")
    return password
