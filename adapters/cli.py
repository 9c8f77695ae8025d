"""`shoal`: the command line. Exit codes: 0 ok, 1 task failed, 2 bad usage or input,
3 server or store unreachable / unauthorised."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from adapters.cliargs import port, positive, server_options, undecodable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def build_parser() -> Parser:
    """The whole command tree."""
    parser = Parser(prog="shoal", description="Shoal: an event-sourced worker orchestrator.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    server = commands.add_parser("server", help="run the server", description="Run the server.")
    server.add_argument("--data-dir", type=Path, help="where data lives (default ./.shoal)")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on")
    server.add_argument("--port", type=port, default=8000, help="port (0 picks a free one)")
    server.add_argument(
        "--database-url", help="postgresql://… (default: SQLite in the data folder; "
        "also SHOAL_DATABASE_URL)",
    )
    nats = server.add_mutually_exclusive_group()
    nats.add_argument(
        "--nats-url", help="an external NATS (cluster) instead of the embedded nats-server, "
        "e.g. nats://user:secret@nats-1:4222 (also SHOAL_NATS_URL)",
    )
    nats.add_argument(
        "--nats-listen", type=_host_port, metavar="HOST:PORT",
        help="where the embedded nats-server listens for agents (default: a free loopback port)",
    )
    server.add_argument(
        "--task-cap", type=positive, default=5, help="tasks this node runs at once"
    )
    server.add_argument("--node-name", help="this node's name (default: the host name)")
    server.add_argument(
        "--worker-wait-limit", type=positive, default=600, metavar="SECONDS",
        help="how long a step waits for a worker before it fails (default 600)",
    )
    server.add_argument(
        "--step-log-limit-mb", type=positive, default=50, metavar="MB",
        help="a step's log is truncated with a marker past this size (default 50)",
    )
    server.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])

    replay = commands.add_parser(
        "replay",
        help="rebuild every read model from the event log",
        description="Rebuild every projection from position 0. With --verify, build them "
        "aside and compare with the live ones instead; exit 1 and print the difference "
        "when they differ.",
    )
    where = replay.add_mutually_exclusive_group()
    where.add_argument("--data-dir", type=Path, help="the server's data folder")
    where.add_argument("--database-url", help="postgresql://… (also SHOAL_DATABASE_URL)")
    replay.add_argument("--verify", action="store_true", help="compare, do not replace")

    script = commands.add_parser(
        "run-script", help="run an ad-hoc script", description="Queue an ad-hoc script and "
        "print its task id. With --wait, stream its log and exit 0 on success, 1 otherwise.",
    )
    server_options(script)
    script.add_argument("--worker-pool", help="pool name or id (default: the default pool)")
    script.add_argument("--syntax", choices=["bash", "sh", "python"], default="bash")
    body = script.add_mutually_exclusive_group(required=True)
    body.add_argument("--script", help="the script text")
    body.add_argument("--file", type=Path, help="a file holding the script")
    script.add_argument("--wait", action="store_true", help="stream the log until it ends")

    events = commands.add_parser("events", help="the audit log")
    event_commands = events.add_subparsers(dest="events_command", required=True, parser_class=Parser)
    tail = event_commands.add_parser(
        "tail", help="follow the audit log", description="Print every event after --after as "
        "a JSON line, then keep following.",
    )
    server_options(tail)
    tail.add_argument("--after", type=int, default=0, help="start after this position")

    from adapters.agentcli import add_agent_commands

    add_agent_commands(commands)
    from adapters.workercli import add_worker_commands

    add_worker_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    stray = undecodable(sys.argv[1:] if argv is None else argv)
    if stray is not None:
        print(f"shoal: an argument is not valid UTF-8 text: {stray!r}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    try:
        if args.command == "server":
            from adapters.server import run_server

            return run_server(args)
        if args.command == "agent":
            from adapters.agentcli import run_agent_command

            return run_agent_command(args)
        if args.command == "worker":
            from adapters.workercli import run_worker_command

            return run_worker_command(args)
        if args.command == "replay":
            from adapters.replay import run_replay

            return run_replay(args)
        from adapters import remote

        try:
            if args.command == "run-script":
                return remote.run_script(args)
            if args.command == "events":
                return remote.events_tail(args)
        except remote.CliError as exc:
            print(f"shoal {args.command}: {exc}", file=sys.stderr)
            return exc.code
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
