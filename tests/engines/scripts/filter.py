"""A configurable `--proc` rule process for the tests.

Reads one JSON request per line on stdin and answers one line on stdout. The verdict is
`--answer TEXT` for every request, the entry for `r.path` in `--table FILE` (a JSON
object), or else by path: `/allow...` answers `true`, anything else a deny message
naming the path. Options make it misbehave in one way each (hang, crash, EOF, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--answer", help="answer this text to every request")
    p.add_argument("--table", help="JSON object: path -> answer line")
    p.add_argument("--record", help="append '<time> <line>' for each line received")
    p.add_argument("--starts", help="append '<time> <pid>' when the process starts")
    p.add_argument("--stderr", help="write this to stderr at start")
    p.add_argument("--delay-first", type=float, default=0.0, help="delay the first answer")
    p.add_argument("--answered", help="append '<time> <n>' after writing answer n")
    p.add_argument("--crash", type=int, help="exit with this status at start, reading nothing")
    p.add_argument("--crash-on-line", type=int, help="exit with this status on reading a line")
    p.add_argument("--crash-once", metavar="MARKER",
                   help="exit 3 on reading a line if MARKER does not exist (and create it)")
    p.add_argument("--hang", action="store_true", help="read lines, never answer")
    p.add_argument("--hang-once", metavar="MARKER",
                   help="hang if MARKER does not exist (and create it); else answer")
    p.add_argument("--eof", action="store_true", help="on a line: close stdout, keep running")
    p.add_argument("--empty", action="store_true", help="answer an empty line")
    p.add_argument("--extra-words", nargs="*", default=[], help="ignored; shows argv splitting")
    return p.parse_args()


def append(path: str | None, text: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def verdict(args: argparse.Namespace, line: str) -> str:
    if args.answer is not None:
        return args.answer
    path = json.loads(line)["path"]
    if args.table:
        with open(args.table) as f:
            return json.load(f)[path]
    if path.startswith("/allow"):
        return "true"
    return json.dumps({"deny_message": f"denied {path}"})


def main() -> None:
    args = parse_args()
    append(args.starts, f"{time.time():.3f} {os.getpid()}")
    if args.stderr:
        print(args.stderr, file=sys.stderr, flush=True)
    if args.crash is not None:
        sys.exit(args.crash)
    hang = args.hang
    if args.crash_once:
        if not os.path.exists(args.crash_once):
            args.crash_on_line = 3
        open(args.crash_once, "a").close()
    if args.hang_once:
        hang = not os.path.exists(args.hang_once)
        open(args.hang_once, "a").close()

    # A reader thread takes lines as they come (so the record shows what was in flight
    # together); the main thread answers them in order.
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            append(args.record, f"{time.time():.3f} {line.rstrip()}")
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    n = 0
    while (line := lines.get()) is not None:
        n += 1
        if args.crash_on_line is not None:
            os._exit(args.crash_on_line)
        if hang:
            continue
        if args.eof:
            os.close(1)
            time.sleep(30)
        if n == 1 and args.delay_first:
            time.sleep(args.delay_first)
        answer = "" if args.empty else verdict(args, line)
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
        append(args.answered, f"{time.time():.3f} {n}")


if __name__ == "__main__":
    main()
