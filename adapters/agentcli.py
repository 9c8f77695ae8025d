"""``shoal agent ...``: register this machine as an external worker, run its agent, and
deregister it. Exit codes as everywhere (adapters/cli.py): 0 ok, 2 bad usage or input,
3 server/NATS unreachable, key refused, or credentials revoked."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.cliargs import positive, server_options

if TYPE_CHECKING:
    import httpx

    from adapters.bootstrap import AgentContainer
    from agent.home import Registration

EXIT_OK, EXIT_USAGE, EXIT_UNREACHABLE = 0, 2, 3

REVOKED = (
    "this worker's credentials were revoked on the server "
    "(the worker was deleted or deregistered); stopping"
)


def add_agent_commands(commands: Any) -> None:
    """Add ``agent register-worker | run | deregister-worker`` to the ``shoal`` parser's
    subcommands (``commands`` is what ``add_subparsers`` returned)."""
    agent = commands.add_parser(
        "agent", help="run this machine as an external worker",
        description="Register this machine as a worker, run its agent, or deregister it.",
    )
    sub = agent.add_subparsers(dest="agent_command", required=True, parser_class=type(agent))
    home_help = "the agent's home folder (default $SHOAL_AGENT_HOME or ~/.shoal-agent)"

    register = sub.add_parser(
        "register-worker", help="register this machine with a server",
        description="Register a worker with the server and keep its credentials in the home "
        "folder (mode 0600).",
    )
    server_options(register, "an API key with ConfigureServer")
    register.add_argument("--name", required=True, help="the worker's name")
    register.add_argument(
        "--worker-pool", dest="worker_pools", action="append", required=True, metavar="POOL",
        help="a pool's name or id (repeat for several)",
    )
    register.add_argument("--comms-style", required=True, choices=["polling", "listening"])
    register.add_argument("--policy", help="machine policy name or id (default: the default policy)")
    register.add_argument("--capacity", type=positive, help="steps this worker runs at once")
    register.add_argument("--home", type=Path, help=home_help)
    register.add_argument(
        "--force", action="store_true",
        help="replace a worker of that name on the server and a registration in the home folder",
    )

    run = sub.add_parser("run", help="run the agent", description="Serve as the registered "
                         "worker until SIGINT/SIGTERM; logs JSON lines on stdout.")
    run.add_argument("--home", type=Path, help=home_help)
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])

    deregister = sub.add_parser(
        "deregister-worker", help="deregister this worker",
        description="Ask the server (over NATS, as this agent) to deregister the worker, then "
        "forget the registration. With --api-key, fall back to HTTP when NATS cannot be reached.",
    )
    deregister.add_argument("--home", type=Path, help=home_help)
    server_options(deregister, "an API key, for the HTTP fallback", required=False,
                   server_help="the server (default: the one registered with)")


def run_agent_command(args: argparse.Namespace) -> int:
    """Run one ``shoal agent`` command; errors end it with one line on stderr."""
    from adapters.remote import CliError

    commands = {"register-worker": register_worker, "run": run_agent, "deregister-worker": deregister_worker}
    try:
        return commands[args.agent_command](args)
    except CliError as exc:
        print(f"shoal agent: {exc}", file=sys.stderr)
        return exc.code


def _home(args: argparse.Namespace) -> Path:
    from agent.home import default_home

    return Path(args.home) if args.home is not None else default_home()


# -- register-worker --------------------------------------------------------------------------


def register_worker(args: argparse.Namespace) -> int:
    """POST /api/workers, then keep what the answer hands over in the home folder."""
    from adapters import remote
    from agent.home import registration_path, save_registration

    home = _home(args)
    if registration_path(home).exists() and not args.force:
        remote.fail(f"{home} already holds a worker registration ({registration_path(home)}); "
                    "use --force to replace it", EXIT_USAGE)
    payload: dict[str, Any] = {
        "name": args.name, "pool_ids": list(args.worker_pools), "comms_style": args.comms_style,
    }
    if args.policy:
        payload["machine_policy_id"] = args.policy
    if args.capacity:
        payload["capacity"] = args.capacity
    with remote.client(args.server, args.api_key, "shoal agent") as c:
        response = _call(c, "POST", "/api/workers", json=payload)
        if response.status_code == 409:
            if not args.force:
                remote.fail(f"a worker named {args.name!r} is already registered "
                            f"({_detail(response)}); use --force to replace it", EXIT_USAGE)
            _delete_by_name(c, args.name)
            response = _call(c, "POST", "/api/workers", json=payload)
        body = remote.check(response).json()
    registration = _registration(args, body)
    path = save_registration(home, registration)
    print(f"registered worker {registration.name!r} ({registration.worker_id}, "
          f"{registration.comms_style}); credentials kept in {path}", flush=True)
    return EXIT_OK


def _call(c: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request without judging the status; an unreachable server is exit 3."""
    import httpx

    from adapters import remote

    try:
        return c.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        remote.fail(f"cannot reach the server at {c.base_url}: {exc}", EXIT_UNREACHABLE)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.reason_phrase)


def _delete_by_name(c: httpx.Client, name: str) -> None:
    """--force: remove the worker that holds ``name`` (found by exact name)."""
    from adapters import remote

    listing = remote.check(_call(c, "GET", "/api/workers", params={"name": name, "take": 1000})).json()
    items = listing.get("items", []) if isinstance(listing, dict) else listing
    matches = [w for w in items if isinstance(w, dict) and w.get("name") == name]
    if not matches:
        remote.fail(f"the server says a worker named {name!r} exists but does not list it", EXIT_UNREACHABLE)
    for worker in matches:
        response = _call(c, "DELETE", f"/api/workers/{worker['id']}")
        if response.status_code != 404:
            remote.check(response)


def _registration(args: argparse.Namespace, body: Any) -> Registration:
    """The Registration from the server's answer; exit 3 when it is not usable."""
    from adapters import remote
    from agent.home import Registration
    from domain.signing import SigningError, parse_public_key

    try:
        given = body["registration"]
        registration = Registration(
            server_url=args.server.rstrip("/"),
            worker_id=str(given["worker_id"]),
            name=str(body.get("name") or args.name),
            comms_style=str(body.get("comms_style") or args.comms_style),
            capacity=int(body.get("capacity") or args.capacity or 1),
            nats_urls=tuple(str(u) for u in given["nats_urls"]),
            nats_user=str(given["nats_user"]),
            nats_password=str(given["nats_password"]),
            inbox_prefix=str(given["inbox_prefix"]),
            work_consumer=str(given["work_consumer"]),
            server_key=str(given["server_key"]),
        )
        parse_public_key(registration.server_key)
    except (KeyError, TypeError, ValueError, AttributeError, SigningError) as exc:
        remote.fail(f"the server's registration answer is not usable: {exc!r}", EXIT_UNREACHABLE)
    if not registration.nats_urls:
        remote.fail("the server's registration answer names no NATS URL", EXIT_UNREACHABLE)
    return registration


# -- run --------------------------------------------------------------------------------------


def run_agent(args: argparse.Namespace) -> int:
    """Serve as the registered worker until SIGINT/SIGTERM (0) or revocation (3)."""
    from adapters import logs, remote
    from adapters.bootstrap import build_agent
    from agent.home import HomeError, lock_home
    from domain.signing import SigningError

    try:
        container = build_agent(_home(args))
        lock_home(container.home)  # held until this process exits
    except HomeError as exc:
        remote.fail(str(exc), EXIT_USAGE)
    except (ValueError, SigningError) as exc:
        remote.fail(f"the registration in {_home(args)} is not usable: {exc}", EXIT_USAGE)
    logs.configure(args.log_level)
    return asyncio.run(_serve(container))


async def _serve(container: AgentContainer) -> int:
    from adapters import remote
    from adapters.nats.bus import BusError
    from agent.executor import prefer_pidfd_child_watcher
    from agent.service import AgentExit

    prefer_pidfd_child_watcher()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = container.service
    try:
        try:
            await service.start()
        except BusError as exc:
            remote.fail(f"cannot reach NATS: {exc}", EXIT_UNREACHABLE)
        result = await service.run_until(stop)
    finally:
        await service.stop()
    if result is AgentExit.REVOKED:
        remote.fail(REVOKED, EXIT_UNREACHABLE)
    return EXIT_OK


# -- deregister-worker ------------------------------------------------------------------------


def deregister_worker(args: argparse.Namespace) -> int:
    """Deregister over NATS as this agent; with --api-key fall back to HTTP DELETE."""
    from adapters import remote
    from adapters.nats.bus import BusError
    from agent.home import HomeError, forget_registration, load_registration

    home = _home(args)
    if args.server and not args.api_key:
        remote.fail("--server needs --api-key (it is only used for the HTTP fallback)", EXIT_USAGE)
    try:
        registration = load_registration(home)
    except HomeError as exc:
        remote.fail(str(exc), EXIT_USAGE)
    try:
        answer = asyncio.run(_deregister_over_nats(registration))
    except BusError as exc:
        if not args.api_key:
            remote.fail(f"cannot deregister over NATS ({exc}); pass --api-key to do it over HTTP",
                        EXIT_UNREACHABLE)
        _deregister_over_http(args.server or registration.server_url, args.api_key, registration.worker_id)
    else:
        if answer.get("ok") is not True:
            remote.fail(f"the server did not deregister the worker: {answer.get('error') or answer}",
                        EXIT_USAGE)
    forget_registration(home)
    print(f"deregistered worker {registration.name!r} ({registration.worker_id})", flush=True)
    return EXIT_OK


async def _deregister_over_nats(registration: Registration) -> dict[str, Any]:
    from adapters.nats import subjects
    from adapters.nats.bus import NatsBus

    bus = NatsBus(reconnect_wait=0.5, connect_timeout=5.0)
    await bus.start(
        list(registration.nats_urls), f"shoal-agent-{registration.name}-deregister",
        user=registration.nats_user, password=registration.nats_password,
        inbox_prefix=registration.inbox_prefix,
    )
    try:
        reply = await bus.request(subjects.control(registration.worker_id),
                                  json.dumps({"kind": "deregister"}).encode(), timeout=10.0)
    finally:
        await bus.stop(grace=1.0)
    try:
        answer = json.loads(reply.data)
    except ValueError:
        answer = None
    return answer if isinstance(answer, dict) else {"ok": False, "error": f"unexpected answer {reply.data!r}"}


def _deregister_over_http(server: str, api_key: str, worker_id: str) -> None:
    from adapters import remote

    with remote.client(server, api_key, "shoal agent") as c:
        response = _call(c, "DELETE", f"/api/workers/{worker_id}")
        if response.status_code != 404:  # already gone is what we wanted
            remote.check(response)
