"""The hubs' metadata store on SQLite and on PostgreSQL (the same migrations, the same tests)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, text

from urbanstack.runtime.store import (Actor, InvalidInput, NotFound, VersionConflict, mask_url, open_store,
                                      upgrade)
from urbanstack.runtime.store import migrate
from urbanstack.runtime.store.models import Base

ERIKA = Actor("sub-erika", "Erika Mustermann")
JOERG = Actor("sub-joerg", "Jörg Schäfer")
# Every table the models declare (the hubs' own, signup's, ...): the migrations must create exactly these.
TABLES = set(Base.metadata.tables)


def _tables(url: str) -> set[str]:
    opened = open_store(url)
    try:
        return set(inspect(opened.engine).get_table_names()) - {"alembic_version"}
    finally:
        opened.close()


def test_migrations_go_from_empty_to_head_and_back_to_base(store_urls):
    migration_url, _ = store_urls
    assert _tables(migration_url) == set()
    upgrade(migration_url)
    owner = open_store(migration_url)
    assert owner.current_revision() == migrate.head()
    assert _tables(migration_url) == TABLES
    owner.upgrade()  # a second upgrade is a no-op
    owner.downgrade("base")
    assert owner.current_revision() is None
    assert _tables(migration_url) == set()
    owner.close()


def test_a_dashboard_is_created_listed_saved_and_shared(store):
    board = store.dashboards.create("musterstadt", ERIKA, "Radverkehr", {"panels": [{"type": "line"}]},
                                    description="Zählstellen am Ring")
    assert len(board.id) == 22 and board.version == 1 and not board.published
    other = store.dashboards.create("musterstadt", JOERG, "Parken", {"panels": []})
    foreign = store.dashboards.create("beispielhausen", Actor("sub-anna", "Anna"), "Luftqualität", {})
    store.dashboards.add_editor(other.id, ERIKA.subject, ERIKA.name, "erika@musterstadt.example")
    store.dashboards.share_with(foreign.id, ["musterstadt"])
    store.dashboards.publish(foreign.id)

    seen = store.dashboards.overview("musterstadt", ERIKA.subject)
    assert [d.id for d in seen.mine] == [board.id]
    assert [d.id for d in seen.editable] == [other.id]
    assert seen.municipality == []
    assert [d.id for d in seen.shared] == [foreign.id]
    assert [d.id for d in seen.published] == [foreign.id]
    assert [d.id for d in store.dashboards.overview("musterstadt", "sub-someone").municipality] == [other.id, board.id]
    assert store.dashboards.overview("beispielhausen", "sub-x").shared == []  # own dashboards are not "shared"

    saved = store.dashboards.save(board.id, 1, "Radverkehr 2025", {"panels": [{"type": "bar"}]}, JOERG)
    assert saved.version == 2 and saved.title == "Radverkehr 2025"
    assert store.dashboards.get(board.id).spec == {"panels": [{"type": "bar"}]}
    assert [v.version for v in store.dashboards.versions(board.id)] == [2, 1]
    assert store.dashboards.version(board.id, 1).spec == {"panels": [{"type": "line"}]}
    assert store.dashboards.is_editor(other.id, ERIKA.subject)
    assert store.dashboards.remove_editor(other.id, ERIKA.subject)
    assert store.dashboards.unshare(foreign.id, "musterstadt")
    assert store.dashboards.overview("musterstadt", ERIKA.subject).shared == []

    with pytest.raises(InvalidInput, match="share it with other municipalities"):
        store.dashboards.share_with(board.id, ["musterstadt"])
    with pytest.raises(InvalidInput, match="title"):
        store.dashboards.create("musterstadt", ERIKA, "   ", {})
    with pytest.raises(InvalidInput, match="slug"):
        store.dashboards.create("Muster Stadt", ERIKA, "x", {})


def test_a_viewed_dashboard_is_reused_but_a_write_of_this_process_shows_at_once_and_another_replicas_soon(
        store, store_urls, monkeypatch):
    from urbanstack.runtime.store import dashboards as module

    replica = open_store(store_urls[1])     # a second hub process on the same database
    try:
        board = store.dashboards.create("musterstadt", ERIKA, "Radverkehr", {"panels": [{"type": "line"}]})
        assert replica.dashboards.viewed(board.id).version == 1
        assert store.dashboards.viewed(board.id).version == 1
        store.dashboards.save(board.id, 1, "Radverkehr 2025", {"panels": [{"type": "bar"}]}, JOERG)
        # this process: at once; the replica: from its copy until it is OVERVIEW_SECONDS old
        assert store.dashboards.viewed(board.id).title == "Radverkehr 2025"
        assert replica.dashboards.viewed(board.id).title == "Radverkehr"
        # saving is always checked against the stored version, never the copy
        assert replica.dashboards.get(board.id).version == 2
        monkeypatch.setattr(module, "OVERVIEW_SECONDS", 0.0)
        assert replica.dashboards.viewed(board.id).version == 2
        monkeypatch.setattr(module, "OVERVIEW_SECONDS", 60.0)
        assert store.dashboards.delete(board.id)
        assert store.dashboards.viewed(board.id) is None
    finally:
        replica.close()


def test_the_overview_is_reused_but_a_write_of_this_process_shows_at_once_and_another_replicas_soon(
        store, store_urls, monkeypatch):
    from urbanstack.runtime.store import dashboards as module

    replica = open_store(store_urls[1])     # a second hub process on the same database
    try:
        assert replica.dashboards.overview("musterstadt", ERIKA.subject).mine == []
        board = store.dashboards.create("musterstadt", ERIKA, "Radverkehr", {})
        assert [d.id for d in store.dashboards.overview("musterstadt", ERIKA.subject).mine] == [board.id]
        # the replica still answers from its overview until it is OVERVIEW_SECONDS old
        assert replica.dashboards.overview("musterstadt", ERIKA.subject).mine == []
        monkeypatch.setattr(module, "OVERVIEW_SECONDS", 0.0)
        assert [d.id for d in replica.dashboards.overview("musterstadt", ERIKA.subject).mine] == [board.id]
        monkeypatch.setattr(module, "OVERVIEW_SECONDS", 60.0)
        other = store.dashboards.create("musterstadt", JOERG, "Parken", {})
        assert store.dashboards.overview("musterstadt", ERIKA.subject).editable == []
        store.dashboards.add_editor(other.id, ERIKA.subject, ERIKA.name)
        assert [d.id for d in store.dashboards.overview("musterstadt", ERIKA.subject).editable] == [other.id]
        store.dashboards.remove_editor(other.id, ERIKA.subject)
        assert store.dashboards.overview("musterstadt", ERIKA.subject).editable == []
        store.dashboards.publish(other.id)
        assert [d.id for d in store.dashboards.overview("beispielhausen", "sub-x").published] == [other.id]
        store.dashboards.delete(other.id)
        assert store.dashboards.overview("beispielhausen", "sub-x").published == []
    finally:
        replica.close()


def test_two_concurrent_saves_of_one_version_one_wins_and_nothing_is_lost(store):
    board = store.dashboards.create("musterstadt", ERIKA, "Original", {"panels": ["original"]})
    writers = [Actor("sub-a", "Anna"), Actor("sub-b", "Bernd")]
    for round_ in range(5):  # several rounds: the race must hold every time, not by luck
        expected = board.version
        barrier, outcomes = threading.Barrier(2), {}

        def save(actor: Actor):
            barrier.wait()
            try:
                outcomes[actor.subject] = store.dashboards.save(board.id, expected, f"{actor.name} {round_}",
                                                                {"by": actor.name}, actor)
            except VersionConflict as conflict:
                outcomes[actor.subject] = conflict

        threads = [threading.Thread(target=save, args=(actor,)) for actor in writers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        wins = [o for o in outcomes.values() if not isinstance(o, VersionConflict)]
        conflicts = [o for o in outcomes.values() if isinstance(o, VersionConflict)]
        assert len(wins) == 1 and len(conflicts) == 1, outcomes
        winner, conflict = wins[0], conflicts[0]
        assert winner.version == expected + 1
        assert conflict.current == expected + 1 and conflict.expected == expected
        assert conflict.saved_by_name == winner.spec["by"]
        assert conflict.saved_at is not None and conflict.saved_at.tzinfo is not None
        assert "reload" in str(conflict)
        board = winner

    versions = store.dashboards.versions(board.id)
    assert [v.version for v in versions] == [6, 5, 4, 3, 2, 1]
    assert versions[-1].spec == {"panels": ["original"]} and versions[-1].title == "Original"
    assert store.dashboards.get(board.id).version == 6


def test_restore_is_a_new_version_with_the_old_content(store):
    board = store.dashboards.create("musterstadt", ERIKA, "Erste Fassung", {"panels": [1]})
    store.dashboards.save(board.id, 1, "Zweite Fassung", {"panels": [2]}, JOERG)
    restored = store.dashboards.restore(board.id, 1, 2, ERIKA)
    assert restored.version == 3 and restored.title == "Erste Fassung" and restored.spec == {"panels": [1]}
    newest = store.dashboards.versions(board.id)[0]
    assert newest.note == "restored from version 1" and newest.saved_by_name == ERIKA.name
    with pytest.raises(VersionConflict):
        store.dashboards.restore(board.id, 1, 2, ERIKA)
    with pytest.raises(NotFound):
        store.dashboards.restore(board.id, 9, 3, ERIKA)


def test_comments_are_bounded_and_deleting_a_dashboard_takes_everything(store):
    board = store.dashboards.create("musterstadt", ERIKA, "Kommentiert", {})
    store.dashboards.add_comment(board.id, "musterstadt", JOERG, "Bitte die Achse in Grad Celsius beschriften.")
    store.dashboards.add_comment(board.id, "beispielhausen", ERIKA, "Übernehmen wir gern.")
    assert [c.body for c in store.dashboards.comments(board.id)] == [
        "Bitte die Achse in Grad Celsius beschriften.", "Übernehmen wir gern."]
    assert [c.tenant for c in store.dashboards.comments(board.id, limit=1)] == ["beispielhausen"]
    with pytest.raises(InvalidInput, match="at most 4000 characters, got 4001"):
        store.dashboards.add_comment(board.id, "musterstadt", JOERG, "x" * 4001)
    with pytest.raises(InvalidInput, match="empty"):
        store.dashboards.add_comment(board.id, "musterstadt", JOERG, "  ")
    with pytest.raises(NotFound):
        store.dashboards.add_comment("nope", "musterstadt", JOERG, "Hallo")

    store.dashboards.save(board.id, 1, "Kommentiert 2", {}, ERIKA)
    store.dashboards.add_editor(board.id, JOERG.subject, JOERG.name)
    store.dashboards.share_with(board.id, ["beispielhausen"])
    assert store.dashboards.delete(board.id)
    assert store.dashboards.get(board.id) is None
    assert store.dashboards.versions(board.id) == [] and store.dashboards.comments(board.id) == []
    assert store.dashboards.editors(board.id) == [] and store.dashboards.shares(board.id) == []
    assert not store.dashboards.delete(board.id)


def test_json_with_umlauts_round_trips_and_timestamps_are_utc(store):
    spec = {"title": "Fußgängerzählung Königstraße", "panels": [{"filter": {"Straße": ["Äußere Ring", "Öde"]},
                                                                 "note": "Größe ≥ 5 °C ✓", "n": 1.5, "ok": True}]}
    board = store.dashboards.create("musterstadt", JOERG, "Übersicht Straßen", spec)
    again = store.dashboards.get(board.id)
    assert again.spec == spec and again.title == "Übersicht Straßen" and again.owner_name == "Jörg Schäfer"
    for moment in (again.created_at, again.updated_at, store.dashboards.versions(board.id)[0].saved_at):
        assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - moment) < timedelta(minutes=1)
    published = store.dashboards.publish(board.id)
    assert store.dashboards.get(board.id).published_at == published.published_at
    assert published.published_at.utcoffset() == timedelta(0)


def test_sessions_expire_when_idle_or_too_old_and_rotation_retires_the_old_token(store):
    sessions = store.sessions
    start = datetime.now(timezone.utc)
    token, record = sessions.create("musterstadt", now=start,
                                    pending_login={"state": "s", "nonce": "n", "code_verifier": "v",
                                                   "return_to": "/dashboards/ü"})
    assert len(token) >= 43 and record.id != token and len(record.id) == 64  # only the hash is stored
    assert sessions.get(token, now=start).pending_login["return_to"] == "/dashboards/ü"
    assert sessions.get("not-a-token", now=start) is None

    signed_in = sessions.rotate(token, now=start + timedelta(minutes=1), subject="sub-erika", username="erika",
                                display_name="Erika Mustermann", roles=["editor"], id_token="id.token.sig",
                                pending_login=None, access_expires_at=start + timedelta(minutes=6))
    assert signed_in is not None
    new_token, new_record = signed_in
    assert sessions.get(token, now=start + timedelta(minutes=1)) is None  # the old token is worthless
    assert new_record.csrf_token != record.csrf_token
    live = sessions.get(new_token, now=start + timedelta(minutes=2))
    assert live.subject == "sub-erika" and live.roles == ["editor"] and live.pending_login is None
    assert live.access_expires_at.utcoffset() == timedelta(0)

    # idle: 30 min without a request ends it; a request in between keeps it alive
    assert sessions.touch(new_token, now=start + timedelta(minutes=29)) is not None
    assert sessions.get(new_token, now=start + timedelta(minutes=58)) is not None
    assert sessions.get(new_token, now=start + timedelta(minutes=60)) is None
    # absolute: 8 h after it began, even when used all the time
    token2, _ = sessions.create("musterstadt", now=start)
    moment = start
    while moment + timedelta(minutes=20) < start + timedelta(hours=8):
        moment += timedelta(minutes=20)
        assert sessions.touch(token2, now=moment) is not None
    assert sessions.touch(token2, now=start + timedelta(hours=8, minutes=1)) is None
    # the idle clock is written at most once a minute (most page views only read their session)
    token5, _ = sessions.create("musterstadt", now=start)
    assert sessions.touch(token5, now=start + timedelta(seconds=59)).last_seen_at == start
    assert sessions.touch(token5, now=start + timedelta(seconds=60)).last_seen_at == start + timedelta(seconds=60)
    assert sessions.get(token5, now=start + timedelta(seconds=60, minutes=29)) is not None
    assert sessions.delete(token5)

    token3, _ = sessions.create("musterstadt", now=start)
    token4, _ = sessions.create("musterstadt", now=start + timedelta(hours=1))
    assert sessions.purge(now=start + timedelta(minutes=45)) == 1
    assert sessions.get(token4, now=start + timedelta(hours=1)) is not None
    assert sessions.delete(token4) and sessions.get(token4, now=start + timedelta(hours=1)) is None
    assert sessions.get(token3, now=start) is None


def test_audit_entries_are_listed_newest_first_per_tenant_in_pages(store):
    for n in range(7):
        store.audit.append("musterstadt", ERIKA, "dashboard.save", f"dashboard/{n}", {"version": n, "titel": "Ä"})
    store.audit.append("beispielhausen", None, "session.purge")
    page = store.audit.list("musterstadt", limit=3)
    assert [e.target for e in page] == ["dashboard/6", "dashboard/5", "dashboard/4"]
    nxt = store.audit.list("musterstadt", limit=3, before=page[-1].id)
    assert [e.detail["version"] for e in nxt] == [3, 2, 1]
    assert all(e.tenant == "musterstadt" and e.at.utcoffset() == timedelta(0) for e in page + nxt)
    assert [e.actor_name for e in store.audit.list("beispielhausen")] == ["system"]
    assert len(store.audit.list("musterstadt", limit=10_000)) == 7


def test_pool_and_statement_timeouts_bound_one_process(store):
    pool = store.engine.pool
    assert pool.size() == 5 and pool._max_overflow == 5 and pool._timeout == 5
    if store.dialect == "postgresql":
        with store.session() as session:
            assert session.execute(text("SHOW statement_timeout")).scalar() == "5s"
        from sqlalchemy.exc import OperationalError

        with pytest.raises(OperationalError, match="statement timeout"):
            with store.session() as session:
                session.execute(text("SELECT pg_sleep(8)"))
    else:
        with store.session() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_postgres_app_role_may_only_touch_rows(store, store_urls):
    if store.dialect != "postgresql":
        pytest.skip("roles exist on PostgreSQL only")
    from sqlalchemy.exc import ProgrammingError

    with pytest.raises(ProgrammingError, match="permission denied"):
        with store.session() as session:
            session.execute(text("CREATE TABLE sneaky (x int)"))
    with pytest.raises(ProgrammingError, match="must be owner"):
        with store.session() as session:
            session.execute(text("ALTER TABLE dashboards ADD COLUMN sneaky int"))
    with pytest.raises(ProgrammingError, match="must be owner"):
        with store.session() as session:
            session.execute(text("DROP TABLE comments"))
    with pytest.raises(ProgrammingError, match="permission denied"):
        with store.session() as session:
            session.execute(text("UPDATE alembic_version SET version_num = 'x'"))
    store.audit.append("musterstadt", ERIKA, "rows.ok")  # rows: yes


def test_a_wrong_password_is_reported_without_the_password(store_urls):
    migration_url, _ = store_urls
    if not migration_url.startswith("postgresql"):
        pytest.skip("SQLite has no password")
    from sqlalchemy.engine import make_url

    wrong = make_url(migration_url).set(password="Geheim-Falsch-123")
    url = wrong.render_as_string(hide_password=False)
    assert "Geheim-Falsch-123" not in mask_url(url)
    broken = open_store(url)
    with pytest.raises(Exception) as failure:
        broken.upgrade()
    broken.close()
    assert "Geheim-Falsch-123" not in str(failure.value) and "password authentication failed" in str(failure.value)
    assert "Geheim-Falsch-123" not in repr(broken)
