"""Worker list: every registered worker with its settings and health."""

from __future__ import annotations

from typing import Any

import orjson

from domain.workers import CommsStyle, HealthStatus, Worker
from projections.base import Projection, handles, iso
from projections.sql import Cursor, Database, page


class WorkerList(Projection):
    """One row per registered worker."""

    name = "workers"
    version = 4
    tables = {  # noqa: RUF012
        "rm_workers": (
            "id TEXT PRIMARY KEY, name TEXT NOT NULL, pool_ids TEXT NOT NULL, "
            "comms_style TEXT NOT NULL, endpoint TEXT, is_disabled INTEGER NOT NULL, "
            "health_status TEXT NOT NULL, health_detail TEXT NOT NULL, last_seen TEXT, "
            "machine_policy_id TEXT NOT NULL, capacity INTEGER NOT NULL, "
            "registered TEXT NOT NULL, is_online INTEGER NOT NULL, "
            # An SSH worker's public settings as JSON (never its key, sealed or not).
            "ssh TEXT"
        )
    }

    @handles(Worker.Registered)
    def _registered(self, e: Worker.Registered, position: int, cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO rm_workers VALUES (?, ?, ?, ?, ?, 0, 'unknown', '', NULL, ?, ?, ?, ?, NULL)",
            (
                str(e.originator_id), e.name, _ids(e.pool_ids), e.comms_style.value, e.endpoint,
                str(e.machine_policy_id), e.capacity, iso(e.timestamp),
                # An agent is online once heard from; an SSH worker has no agent.
                int(e.comms_style is CommsStyle.SSH),
            ),
        )

    def _set(self, cur: Cursor, worker_id: Any, **values: Any) -> None:
        columns = ", ".join(f"{k} = ?" for k in values)
        cur.execute(
            f"UPDATE rm_workers SET {columns} WHERE id = ?",
            (*values.values(), str(worker_id)),
        )

    @handles(Worker.Renamed)
    def _renamed(self, e: Worker.Renamed, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, name=e.name)

    @handles(Worker.PoolsChanged)
    def _pools(self, e: Worker.PoolsChanged, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, pool_ids=_ids(e.pool_ids))

    @handles(Worker.Disabled, Worker.Enabled)
    def _disabled(self, e: Worker.Event, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, is_disabled=int(isinstance(e, Worker.Disabled)))

    @handles(Worker.CapacityChanged)
    def _capacity(self, e: Worker.CapacityChanged, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, capacity=e.capacity)

    @handles(Worker.PolicyChanged)
    def _policy(self, e: Worker.PolicyChanged, position: int, cur: Cursor) -> None:
        self._set(cur, e.originator_id, machine_policy_id=str(e.machine_policy_id))

    @handles(Worker.HealthChecked)
    def _health(self, e: Worker.HealthChecked, position: int, cur: Cursor) -> None:
        if e.status is HealthStatus.UNAVAILABLE:
            self._set(cur, e.originator_id, health_status=e.status.value, health_detail=e.detail)
        else:
            self._set(
                cur, e.originator_id, health_status=e.status.value, health_detail=e.detail,
                last_seen=iso(e.timestamp),
            )

    @handles(Worker.WentOffline)
    def _offline(self, e: Worker.WentOffline, position: int, cur: Cursor) -> None:
        self._set(
            cur, e.originator_id, health_status=HealthStatus.UNAVAILABLE.value,
            health_detail=e.detail, is_online=0,
        )

    @handles(Worker.CameOnline)
    def _online(self, e: Worker.CameOnline, position: int, cur: Cursor) -> None:
        # Coming back clears "unavailable"; the next health check says how healthy it is.
        cur.execute(
            "UPDATE rm_workers SET last_seen = ?, is_online = 1, "
            "health_detail = CASE WHEN health_status = 'unavailable' THEN '' ELSE health_detail END, "
            "health_status = CASE WHEN health_status = 'unavailable' THEN 'unknown' "
            "ELSE health_status END WHERE id = ?",
            (iso(e.timestamp), str(e.originator_id)),
        )

    @handles(Worker.SshConfigured)
    def _ssh(self, e: Worker.SshConfigured, position: int, cur: Cursor) -> None:
        public = {
            "host": e.host, "port": e.port, "username": e.username,
            "host_key_fingerprint": e.host_key_fingerprint,
            "has_private_key": e.private_key_sealed is not None,
            "private_key_ref": e.private_key_ref,
        }
        self._set(cur, e.originator_id, ssh=orjson.dumps(public).decode())

    @handles(Worker.Deregistered)
    def _deregistered(self, e: Worker.Deregistered, position: int, cur: Cursor) -> None:
        cur.execute("DELETE FROM rm_workers WHERE id = ?", (str(e.originator_id),))


def _ids(ids: tuple[Any, ...]) -> str:
    return orjson.dumps([str(i) for i in ids]).decode()


_COLUMNS = (
    "id, name, pool_ids, comms_style, endpoint, is_disabled, health_status, health_detail, "
    "last_seen, machine_policy_id, capacity, registered, is_online, ssh"
)


def _worker(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = [c.strip() for c in _COLUMNS.split(",")]
    out = dict(zip(keys, row, strict=True))
    out["pool_ids"] = orjson.loads(out["pool_ids"])
    out["is_disabled"] = bool(out["is_disabled"])
    out["is_online"] = bool(out["is_online"])
    out["ssh"] = None if out["ssh"] is None else orjson.loads(out["ssh"])
    return out


def _with_load(cur: Cursor, workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # running_steps comes from the membership projection's assignments (same database).
    if workers:
        marks = ", ".join("?" for _ in workers)
        cur.execute(
            f"SELECT worker_id, COUNT(*) FROM rm_assignments WHERE worker_id IN ({marks}) "
            "GROUP BY worker_id",
            [w["id"] for w in workers],
        )
        load = {r[0]: int(r[1]) for r in cur.fetchall()}
        for worker in workers:
            worker["running_steps"] = load.get(worker["id"], 0)
    return workers


def _literal(text: str) -> str:
    """``text`` for a LIKE pattern, its wildcards escaped: a filter matches what it says."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_workers(
    db: Database,
    *,
    pool: str | None = None,
    health: str | None = None,
    comms_style: str | None = None,
    name: str | None = None,
    skip: int = 0,
    take: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """Workers matching every filter given, by name; and how many match in all.
    ``name`` matches case-insensitively anywhere in the name."""
    where, params = [], []
    if pool is not None:
        where.append("pool_ids LIKE ?")
        params.append(f'%"{pool}"%')
    if health is not None:
        where.append("health_status = ?")
        params.append(health)
    if comms_style is not None:
        where.append("comms_style = ?")
        params.append(comms_style)
    if name is not None:
        if "\0" in name:
            # No name holds one, and SQLite's LIKE stops reading its pattern at a NUL.
            return [], 0
        where.append("lower(name) LIKE ? ESCAPE '\\'")
        params.append(f"%{_literal(name.lower())}%")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    with db.read() as cur:
        cur.execute(f"SELECT COUNT(*) FROM rm_workers{clause}", params)
        total = cur.fetchone()[0]
        sql, paging = page(
            f"SELECT {_COLUMNS} FROM rm_workers{clause} ORDER BY lower(name), id", skip, take
        )
        cur.execute(sql, (*params, *paging))
        return _with_load(cur, [_worker(r) for r in cur.fetchall()]), total


def get_worker(db: Database, worker_id: str) -> dict[str, Any] | None:
    """One worker's row, or None."""
    with db.read() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM rm_workers WHERE id = ?", (worker_id,))
        row = cur.fetchone()
        return None if row is None else _with_load(cur, [_worker(row)])[0]


def agent_workers(db: Database) -> list[dict[str, Any]]:
    """Workers reached through an agent (listening or polling), for the heartbeat monitor."""
    return _workers_of(db, "('listening', 'polling')")


def checked_workers(db: Database) -> list[dict[str, Any]]:
    """Every worker a health check can reach: agents and SSH workers."""
    return _workers_of(db, "('listening', 'polling', 'ssh')")


def _workers_of(db: Database, styles: str) -> list[dict[str, Any]]:
    with db.read() as cur:
        cur.execute(
            "SELECT id, name, comms_style, health_status, machine_policy_id FROM rm_workers "
            f"WHERE comms_style IN {styles} ORDER BY id"
        )
        return [
            {"id": r[0], "name": r[1], "comms_style": r[2], "health_status": r[3],
             "machine_policy_id": r[4]}
            for r in cur.fetchall()
        ]
