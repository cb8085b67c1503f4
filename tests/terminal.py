#!/usr/bin/env python3
"""Drives an interactive program through a pseudo-terminal, like a person at a keyboard.

Standard library only. Used by the bksh REPL test (tests/shell.rs), since line editing, Tab
completion and history only happen on a terminal.

Usage:
  python3 tests/terminal.py STEPS_JSON -- COMMAND [ARGS...]

STEPS_JSON is a JSON array of [keys, expected] pairs: the keys are written to the terminal
(use "\t" for Tab, "\r" for Enter, "\u001b[A" for Up), then the output is read until it contains
`expected` (a substring, matched against the output since the previous step, with ANSI escape
sequences removed), waiting at most 15 s per step. After the last step the program is waited for
(at most 15 s). The whole transcript is printed on stdout; the exit status is 0 when every step
matched and the program exited with status 0, else 1 (with the failing step on stderr).
"""

import json
import os
import pty
import re
import select
import signal
import sys
import time

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
STEP_TIMEOUT = 15.0


def read_until(fd, needle, transcript):
    """Reads from fd until the cleaned output read in this step contains needle."""
    got = b""
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        clean = ANSI.sub(b"", got).decode("utf-8", "replace")
        if needle in clean:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            clean = ANSI.sub(b"", got).decode("utf-8", "replace")
            return needle in clean
        got += chunk
        transcript.append(chunk)


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write(__doc__)
        return 2
    steps = json.loads(argv[1])
    command = argv[3:]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        os.execvp(command[0], command)
    transcript = []
    ok = True
    for keys, expected in steps:
        os.write(fd, keys.encode("utf-8"))
        if not read_until(fd, expected, transcript):
            sys.stderr.write("step %r: %r not seen within %.0f s\n" % (keys, expected, STEP_TIMEOUT))
            ok = False
            break
    status = None
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        # Drain the terminal so the program never blocks writing to it.
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 4096)
                if chunk:
                    transcript.append(chunk)
            except OSError:
                pass
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.stderr.write("the program did not exit after the last step\n")
        ok = False
    elif not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        sys.stderr.write("the program exited with status %r\n" % status)
        ok = False
    sys.stdout.write(ANSI.sub(b"", b"".join(transcript)).decode("utf-8", "replace"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
