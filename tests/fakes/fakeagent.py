"""Shared by the fake `claude`, `gemini` and `codex` executables: reads the
prompt's instructions and carries them out in the current directory.

Instructions, one per prompt line (other lines are ignored, like a task
description would be):
  write <path>: <content>   create or overwrite <path> (\\n in <content> is a newline)
  say <text>                an assistant message
  env <NAME>                an assistant message with the value of $NAME
  sleep <seconds>           run a child `sleep <seconds>` and wait for it
                            (its pid goes to stderr, for process-group tests)
  turns <n>                 report <n> turns
  cost <usd>                report this cost (claude only)
  fail <message>            end the run with an error
  exit <code>               exit with <code> (gemini: 42 input error, 53 turn limit)

Recording: when the working directory holds a file named `.aida-fake-record`
(a test commits one), each fake writes `.aida-fake-<prog>.json` there: its
argv, the options and arguments it parsed, and its environment. Tests read
it from the commit to check exactly what a CLI received (a prompt that
starts with a dash stayed the prompt; no flag was injected; which variables
reached it). The marker, not an environment variable, switches it on: the
worker passes agents only an allow-listed environment.
"""

import datetime
import os
import subprocess
import sys
import uuid
import json


class Plan:
    def __init__(self, prompt):
        self.steps = []  # ("write", path, content) | ("say", text) | ("sleep", secs)
        self.turns = None
        self.cost = None
        self.fail = None
        self.exit = None
        for raw in prompt.splitlines():
            line = raw.strip()
            word, _, rest = line.partition(" ")
            if word == "write" and ":" in rest:
                path, _, content = rest.partition(":")
                self.steps.append(("write", path.strip(), content.strip().replace("\\n", "\n")))
            elif word == "say":
                self.steps.append(("say", rest))
            elif word == "env":
                self.steps.append(("say", "%s=%s" % (rest, os.environ.get(rest, ""))))
            elif word == "sleep":
                self.steps.append(("sleep", rest))
            elif word == "turns":
                self.turns = int(rest)
            elif word == "cost":
                self.cost = float(rest)
            elif word == "fail":
                self.fail = rest or "failed as asked"
            elif word == "exit":
                self.exit = int(rest)

    def writes(self):
        return [s for s in self.steps if s[0] == "write"]

    def summary(self):
        files = [s[1] for s in self.writes()]
        if files:
            return "Wrote %s." % ", ".join(files)
        return "Nothing to change."


RECORD_MARKER = ".aida-fake-record"


def record(prog, args):
    if not os.path.exists(RECORD_MARKER):
        return
    with open(".aida-fake-%s.json" % prog, "w") as f:
        json.dump({"argv": sys.argv[1:], "args": vars(args), "env": dict(os.environ)},
                  f, indent=1, sort_keys=True)
        f.write("\n")


def emit(event):
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def note(prog, text):
    sys.stderr.write("%s: %s\n" % (prog, text))
    sys.stderr.flush()


def write_file(path, content):
    full = os.path.abspath(path)
    existed = os.path.exists(full)
    parent = os.path.dirname(full)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(full, "w") as f:
        f.write(content + "\n")
    return full, existed


def sleep(prog, secs):
    child = subprocess.Popen(["sleep", secs])
    note(prog, "child sleep pid %d" % child.pid)
    child.wait()


def new_id():
    return str(uuid.uuid4())


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
