"""What runs on an SSH worker for one step, and how its output is read back.

One channel per step runs :data:`BOOTSTRAP` (bash). It makes the step folder
(``mktemp -d``, 0700), writes the launcher (the step's variables; they travel on stdin, so
they never show in the remote process list), the script and ``shoal-artifact`` into it,
starts the script as ``setsid [timeout -k GRACE LIMIT] bash`` (a session and process group
of its own, the deadline enforced remotely), and reports on stdout with marker lines
``\\n##shoal-TOKEN:KIND:ARGS\\n`` (TOKEN is drawn per step, so output cannot fake them):

* ``dir:PATH`` once the folder is ready (it then waits for ``go`` when packages come);
* ``started:PID`` once the script runs (PID is also its process group id);
* ``exit:CODE:ARTIFACTS`` when it ended, with the number of files in ``.shoal/artifacts``.

Stdin stays open for the life of the step: its end (the client's EOF, a closed channel, a
dead connection) makes a watcher stop the whole process group (TERM, then KILL after 2 s),
after which the bootstrap removes the folder and exits. So cancelling is sending EOF, and a
client that vanished leaves nothing running behind.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable, Mapping

import asyncssh

from agent.artifacts import TOOL_NAME, TOOL_SCRIPT
from agent.steplog import STDERR, STDOUT, StepLog

__all__ = ["MarkerScanner", "StepSession", "command", "launcher"]

_TAKE_WITH_READ = 8192  # up to this size bash's read builtin is cheaper than a head process

BOOTSTRAP = r"""
set -u
trap : PIPE HUP
t=$1
exec 3<&0
d=$(mktemp -d "${TMPDIR:-/tmp}/shoal-step.XXXXXXXXXX") || exit 97
trap 'cd / && rm -rf -- "$d"' EXIT
mkdir -m 700 "$d/.shoal" "$d/.shoal/bin" "$d/.shoal/artifacts" || exit 97
take() {
    if [ "$1" -gt __TAKE__ ]; then
        head -c "$1" > "$2" || exit 97
    else
        x=
        [ "$1" = 0 ] || LC_ALL=C IFS= read -r -N "$1" x || exit 97
        printf '%s' "$x" > "$2" || exit 97
    fi
}
take "$2" "$d/.shoal/launch.sh"
take "$3" "$d/script.sh"
printf '%s' __TOOL__ > "$d/.shoal/bin/__TOOLNAME__" && chmod 500 "$d/.shoal/bin/__TOOLNAME__" || exit 97
printf '\n##shoal-%s:dir:%s\n' "$t" "$d"
if [ "$6" = 1 ]; then
    IFS= read -r go || exit 97
    [ "$go" = go ] || exit 97
fi
cd "$d" || exit 97
if [ -n "$4" ]; then
    setsid timeout -k "$5" "$4" /bin/bash .shoal/launch.sh </dev/null 3<&- &
else
    setsid /bin/bash .shoal/launch.sh </dev/null 3<&- &
fi
p=$!
printf '\n##shoal-%s:started:%s\n' "$t" "$p"
(
    # Zombies count as members for kill(2); orphans may wait a while for init to reap them.
    if command -v ps >/dev/null; then
        alive() { ps -e -o pgid=,stat= | awk -v g="$p" '$1 == g && $2 !~ /^Z/ { f = 1 } END { exit !f }'; }
    else
        alive() { kill -0 -- "-$p" 2>/dev/null; }
    fi
    while IFS= read -r _ <&3; do :; done
    if kill -TERM -- "-$p" 2>/dev/null; then
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            alive || exit 0
            sleep 0.1
        done
        kill -KILL -- "-$p" 2>/dev/null
    fi
) </dev/null &
w=$!
exec 3<&-
while :; do
    wait "$p"; rc=$?
    kill -0 "$p" 2>/dev/null || break
done
shopt -s nullglob dotglob
a=("$d"/.shoal/artifacts/*)
printf '\n##shoal-%s:exit:%s:%s\n' "$t" "$rc" "${#a[@]}"
wait "$w"
"""


def command(token: str, launch_bytes: int, script_bytes: int, timeout_s: str, kill_after: str,
            wait_go: bool) -> str:
    """The channel's command: the bootstrap under bash, whatever the login shell is."""
    body = (BOOTSTRAP.replace("__TAKE__", str(_TAKE_WITH_READ))
            .replace("__TOOLNAME__", TOOL_NAME).replace("__TOOL__", shlex.quote(TOOL_SCRIPT)))
    args = [token, str(launch_bytes), str(script_bytes), timeout_s, kill_after, "1" if wait_go else "0"]
    # --norc: a bash started by sshd reads ~/.bashrc (Debian), and an `exec`ed one would
    # again; the login shell's own start-up is the same cost a bare `ssh host true` pays.
    quoted = " ".join(shlex.quote(a) for a in (body, "shoal-step", *args))
    return f"exec /bin/bash --norc --noprofile -c {quoted}"


def launcher(env: Mapping[str, str]) -> tuple[bytes, list[str]]:
    """The launcher script (the step's variables, then the script) and the names it had
    to leave out (bash cannot export a variable whose name is not an identifier)."""
    lines = ["export LANG=C.UTF-8 PYTHONUNBUFFERED=1"]
    skipped: list[str] = []
    for key, value in env.items():
        if key.isidentifier() and key.isascii():
            lines.append(f"export {key}={shlex.quote(value)}")
        else:
            skipped.append(key)
    lines += [
        'export SHOAL_WORK_DIR="$PWD" TMPDIR="$PWD"',
        'export SHOAL_ARTIFACTS_DIR="$PWD/.shoal/artifacts"',
        'export PATH="$PWD/.shoal/bin:$PATH"',
        "exec /bin/bash ./script.sh",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"), skipped


class MarkerScanner:
    """Splits the bootstrap's stdout into the script's output and marker lines.

    A marker is ``\\n##shoal-TOKEN:…\\n``; its leading newline (which ends any unfinished
    line of the script) is not output. Bytes that may be the start of a marker are held
    back; a held newline is let go after ``hold_s`` (a marker is one small write, its bytes
    arrive together), so a finished line is never kept waiting for long."""

    def __init__(self, token: str, output: Callable[[bytes], None], marker: Callable[[str], None],
                 hold_s: float = 0.02) -> None:
        self._head = f"##shoal-{token}:".encode()
        self._start = b"\n" + self._head
        self._output = output
        self._marker = marker
        self._held = b""
        self._hold_s = hold_s
        self._timer: asyncio.TimerHandle | None = None

    def feed(self, data: bytes) -> None:
        """Bytes the channel delivered on stdout."""
        self._cancel_timer()
        buf = self._held + data
        self._held = b""
        while (i := buf.find(self._head)) >= 0:
            end = buf.find(b"\n", i + len(self._head))
            if end < 0:
                break
            before = buf[: i - 1] if i > 0 and buf[i - 1] == 0x0A else buf[:i]
            if before:
                self._output(before)
            self._marker(buf[i + len(self._head): end].decode("utf-8", "replace"))
            buf = buf[end + 1:]
        else:
            keep = max(_prefix_suffix(buf, self._start), _prefix_suffix(buf, self._head))
            self._flush(buf[: len(buf) - keep])
            self._held = buf[len(buf) - keep:]
            if self._held.startswith(b"\n"):
                self._timer = asyncio.get_running_loop().call_later(self._hold_s, self._release)
            return
        # An unfinished marker line: keep it (with its newline) until the rest arrives.
        start = i - 1 if i > 0 and buf[i - 1] == 0x0A else i
        self._flush(buf[:start])
        self._held = buf[start:]

    def close(self) -> None:
        """End of stdout: whatever is held is output."""
        self._cancel_timer()
        self._flush(self._held)
        self._held = b""

    def _release(self) -> None:
        self._timer = None
        if self._held.startswith(b"\n"):
            self._output(b"\n")
            self._held = self._held[1:]

    def _flush(self, data: bytes) -> None:
        if data:
            self._output(data)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _prefix_suffix(buf: bytes, pattern: bytes) -> int:
    """The length of the longest end of ``buf`` that ``pattern`` starts with (not all of it)."""
    for n in range(min(len(buf), len(pattern) - 1), 0, -1):
        if buf.endswith(pattern[:n]):
            return n
    return 0


class StepSession(asyncssh.SSHClientSession[bytes]):
    """One step's channel: stderr goes to the step log, stdout through the marker scanner;
    futures tell when the folder is ready, the script started, ended, and the channel closed."""

    def __init__(self, steplog: StepLog, token: str) -> None:
        loop = asyncio.get_running_loop()
        self._steplog = steplog
        self._scanner = MarkerScanner(token, lambda b: steplog.feed(STDOUT, b), self._on_marker)
        self.folder: asyncio.Future[str] = loop.create_future()
        self.started: asyncio.Future[int] = loop.create_future()
        self.exited: asyncio.Future[tuple[int, int]] = loop.create_future()
        self.closed: asyncio.Future[Exception | None] = loop.create_future()
        self._stdout_open = True
        self.started_at = 0.0  # loop time when the runner learnt the script started

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Output from the remote side."""
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self._steplog.feed(STDERR, data)
        elif self._stdout_open:
            self._scanner.feed(data)

    def eof_received(self) -> bool:
        """The remote side closed its output."""
        self._end_output()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """The channel closed; ``exc`` is set when the connection broke."""
        self._end_output()
        for future in (self.folder, self.started, self.exited):
            if not future.done():
                future.cancel()
        if not self.closed.done():
            self.closed.set_result(exc)

    def system(self, text: str) -> None:
        """A line the runner itself writes into the step's log."""
        self._steplog.system(text)

    def _end_output(self) -> None:
        if self._stdout_open:
            self._stdout_open = False
            self._scanner.close()
            self._steplog.close()

    def _on_marker(self, text: str) -> None:
        kind, _, rest = text.partition(":")
        try:
            if kind == "dir" and not self.folder.done():
                self.folder.set_result(rest)
            elif kind == "started" and not self.started.done():
                self.started.set_result(int(rest))
            elif kind == "exit" and not self.exited.done():
                code, _, count = rest.partition(":")
                self.exited.set_result((int(code), int(count or 0)))
                # Anything after this comes from a process that escaped; it is not the step's.
                self._end_output()
        except ValueError:
            self._steplog.system(f"unreadable report from the SSH worker: {text!r}")
