"""``shoal worker add-ssh``: register an SSH worker with a server. Exit codes as everywhere
(adapters/cli.py): 0 ok, 2 bad usage or input, 3 server unreachable or key refused."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from adapters.cliargs import positive, remote_port, server_options

EXIT_OK, EXIT_USAGE = 0, 2
MAX_KEY_FILE_BYTES = 64 * 1024


def add_worker_commands(commands: Any) -> None:
    """Add ``worker add-ssh`` to the ``shoal`` parser's subcommands (``commands`` is what
    ``add_subparsers`` returned)."""
    worker = commands.add_parser(
        "worker", help="manage workers on a server", description="Manage workers on a server."
    )
    sub = worker.add_subparsers(dest="worker_command", required=True, parser_class=type(worker))
    ssh = sub.add_parser(
        "add-ssh", help="register an SSH worker",
        description="Register a machine the server reaches over SSH as a worker; prints its id. "
        "The private key is sent to the server, which keeps it encrypted and never shows it "
        "again; or name a key file on the server with --private-key-ref.",
    )
    server_options(ssh, "an API key with ConfigureServer")
    ssh.add_argument("--name", required=True, help="the worker's name")
    ssh.add_argument(
        "--worker-pool", dest="worker_pools", action="append", required=True, metavar="POOL",
        help="a pool's name or id (repeat for several)",
    )
    ssh.add_argument("--host", required=True, help="the machine's host name or address")
    ssh.add_argument("--port", type=remote_port, default=22, help="its SSH port (default 22)")
    ssh.add_argument("--username", required=True, help="the account steps run as")
    ssh.add_argument(
        "--host-key-fingerprint", required=True, metavar="SHA256:...",
        help="the host key's fingerprint, as `ssh-keygen -lf <host key>.pub` prints it",
    )
    key = ssh.add_mutually_exclusive_group(required=True)
    key.add_argument(
        "--private-key-file", type=Path, metavar="PATH",
        help="a local file holding the private key (unencrypted PEM or OpenSSH format)",
    )
    key.add_argument(
        "--private-key-ref", metavar="PATH",
        help="instead: the absolute path of a key file on the server, read when connecting",
    )
    ssh.add_argument("--capacity", type=positive, help="steps this worker runs at once")
    ssh.add_argument("--policy", help="machine policy name or id (default: the default policy)")


def run_worker_command(args: argparse.Namespace) -> int:
    """Run one ``shoal worker`` command; errors end it with one line on stderr."""
    from adapters.remote import CliError

    try:
        return add_ssh(args)
    except CliError as exc:
        print(f"shoal worker: {exc}", file=sys.stderr)
        return exc.code


def _read_key(path: Path) -> str:
    from adapters import remote

    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            remote.fail(f"{path} is too large to be a private key", EXIT_USAGE)
        return path.read_text()
    except OSError as exc:
        remote.fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    except UnicodeDecodeError:
        remote.fail(f"{path} is not a text key file (PEM or OpenSSH format)", EXIT_USAGE)


def add_ssh(args: argparse.Namespace) -> int:
    """POST /api/workers for an SSH worker and print its id."""
    from adapters import remote

    ssh: dict[str, Any] = {
        "host": args.host, "port": args.port, "username": args.username,
        "host_key_fingerprint": args.host_key_fingerprint,
    }
    if args.private_key_file is not None:
        ssh["private_key"] = _read_key(args.private_key_file)
    else:
        ssh["private_key_ref"] = args.private_key_ref
    payload: dict[str, Any] = {
        "name": args.name, "pool_ids": list(args.worker_pools), "comms_style": "ssh", "ssh": ssh,
    }
    if args.policy:
        payload["machine_policy_id"] = args.policy
    if args.capacity:
        payload["capacity"] = args.capacity
    with remote.client(args.server, args.api_key, "shoal worker") as c:
        worker = remote.request(c, "POST", "/api/workers", json=payload).json()
    print(worker["id"], flush=True)
    return EXIT_OK
