#!/usr/bin/env python3
"""
A fake Claude Code CLI for integration tests.

Invoked like the real one in streaming mode:

    fake_claude.py -p --input-format stream-json --output-format stream-json
        --verbose --permission-prompt-tool stdio [--resume SID] [--model M] ...

It reads one JSON message per stdin line and prints the real CLI's
stream-json shapes, one object per stdout line.  Sessions persist under
$HOME/.fake-claude/sessions/SID.json, and each reply is "turn N: PROMPT",
where N counts the session's user turns including resumed history.

Directives anywhere in a prompt (whitespace-separated tokens) ask for
behaviours:

    tool-sleep:SECONDS   a Bash tool_use running a sleep in its own session
    slow:SECONDS         wait (interruptibly) before replying
    permission:TOOL      ask can_use_tool; on allow write updatedInput's file
    suggest:TOOL         the same (Write or Bash), asked as the real CLI asks, with
                         display_name, description and permission_suggestions
    ask-user             an AskUserQuestion tool call, answered with updatedInput's answers
    exit-plan            an ExitPlanMode tool call with a Markdown plan to approve
    huge:BYTES           an assistant text of that many bytes
    nonjson              a plain text line on stdout before the result
    stderr:BYTES         that many bytes on stderr before replying
    ignore-term          ignore SIGTERM, then behave like slow:600
    grandchild           leave a sleeping process in its own session behind
    crash                exit 3 after the assistant message, with no result
    error                an is_error result ("API Error: 500 fake failure")

Tool pids are appended to the file named by $FAKE_CLAUDE_PIDFILE. The
answers to the suggest:, ask-user and exit-plan requests (the `response` of
each control_response, as received) are appended, one JSON line each, to
$HOME/.fake-claude/answers.jsonl.
Stdlib only, single file.
"""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

VERSION = "2.1.0"
DEFAULT_MODEL = "claude-sonnet-4-5-20250929"
TOOLS = ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "WebFetch", "TodoWrite"]
PERMISSION_MODES = ["acceptEdits", "bypassPermissions", "default", "delegate", "dontAsk", "plan"]

_FLAGS = {"-p", "--print", "--verbose", "--include-partial-messages"}
_OPTIONS = {
    "--input-format", "--output-format", "--permission-prompt-tool", "--resume", "-r",
    "--model", "--permission-mode", "--append-system-prompt", "--max-budget-usd", "--effort",
}
_LISTS = {
    "--allowedTools": "allowed", "--allowed-tools": "allowed",
    "--disallowedTools": "disallowed", "--disallowed-tools": "disallowed",
}


def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(code)


def parse_args(argv):
    opts = {"allowed": [], "disallowed": []}
    flags = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--version" or arg == "-v":
            sys.stdout.write(VERSION + " (Claude Code)\n")
            sys.stdout.flush()
            os._exit(0)
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _FLAGS and not eq:
            flags.add(name)
        elif name in _OPTIONS:
            if eq:
                value = inline
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                fail("error: option '%s' argument missing" % name)
            opts[{"-r": "--resume"}.get(name, name)] = value
        elif name in _LISTS:
            values = [inline] if eq else []
            while not eq and i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            if not values:
                fail("error: option '%s' argument missing" % name)
            for value in values:
                # "Bash(git log:*) Edit,Write": spaces inside parentheses belong to the rule.
                opts[_LISTS[name]].extend(re.findall(r"[^,\s(]+(?:\([^)]*\))?", value))
        elif arg.startswith("-"):
            fail("error: unknown option '%s'" % arg)
        else:
            fail("error: unexpected argument '%s' (prompts come on stdin here)" % arg)
    if not flags & {"-p", "--print"}:
        fail("Error: fake_claude only supports --print mode")
    if opts.get("--input-format", "text") != "stream-json":
        fail("Error: fake_claude only supports --input-format=stream-json")
    if opts.get("--output-format") != "stream-json":
        fail("Error: --input-format=stream-json requires output-format=stream-json.")
    if "--verbose" not in flags:
        fail("Error: When using --print, --output-format=stream-json requires --verbose")
    mode = opts.get("--permission-mode", "default")
    if mode not in PERMISSION_MODES:
        fail("error: option '--permission-mode <mode>' argument '%s' is invalid. "
             "Allowed choices are %s." % (mode, ", ".join(PERMISSION_MODES)))
    if "--max-budget-usd" in opts:
        try:
            if float(opts["--max-budget-usd"]) <= 0:
                raise ValueError
        except ValueError:
            fail("Error: --max-budget-usd must be a positive number")
    opts["partial"] = "--include-partial-messages" in flags
    return opts


#: The real CLI's error text in the result of an interrupted turn.
INTERRUPT_DIAGNOSTIC = "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"

class Interrupted(Exception):
    """The current prompt was interrupted by a control_request."""


class Fake:
    def __init__(self, opts):
        self.opts = opts
        self.model = opts.get("--model", DEFAULT_MODEL)
        self.mode = opts.get("--permission-mode", "default")
        self.sessions = os.path.join(os.path.expanduser("~"), ".fake-claude", "sessions")
        self.prompts = 0
        self.inbox = queue.Queue()
        self.pending = []
        self.responses = {}
        self.out_lock = threading.Lock()
        resume = opts.get("--resume")
        if resume is not None:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", resume) or not os.path.exists(
                    self.session_file(resume)):
                self.lost(resume)
            self.sid = resume
            self.history = self.load(resume)
        else:
            self.sid = str(uuid.uuid4())
            self.history = []

    def lost(self, sid):
        """
        The real CLI, asked to resume a conversation it does not have,
        prints an error result naming it, says so on stderr, exits 1.
        """
        message = "No conversation found with session ID: %s" % sid
        sys.stdout.write(json.dumps({
            "type": "result", "subtype": "error_during_execution", "duration_ms": 0,
            "duration_api_ms": 0, "is_error": True, "num_turns": 0, "stop_reason": None,
            "session_id": sid, "total_cost_usd": 0, "modelUsage": {},
            "permission_denials": [], "uuid": str(uuid.uuid4()), "errors": [message],
        }, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        fail(message)

    # -- persistence

    def session_file(self, sid):
        return os.path.join(self.sessions, sid + ".json")

    def load(self, sid):
        try:
            with open(self.session_file(sid)) as f:
                data = json.load(f)
            return [p for p in data if isinstance(p, str)] if isinstance(data, list) else []
        except (OSError, ValueError):
            fail("No conversation found with session ID: %s" % sid)

    def save(self):
        os.makedirs(self.sessions, exist_ok=True)
        path = self.session_file(self.sid)
        tmp = path + ".%d.tmp" % os.getpid()
        with open(tmp, "w") as f:
            json.dump(self.history, f)
        os.replace(tmp, path)

    # -- output

    def emit(self, obj):
        try:
            data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (from a \ud800 escape) cannot be UTF-8.
            data = json.dumps(obj, separators=(",", ":")).encode("ascii")
        self.write(data + b"\n")

    def write(self, data):
        try:
            with self.out_lock:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
        except (BrokenPipeError, ValueError):
            os._exit(1)

    def usage(self, text=""):
        return {"input_tokens": 10, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": max(1, len(text) // 4),
                "service_tier": "standard"}

    def assistant(self, content, text=""):
        if self.opts["partial"] and text:
            self.stream_events(text)
        self.emit({
            "type": "assistant",
            "message": {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message",
                        "role": "assistant", "model": self.model, "content": content,
                        "stop_reason": None, "stop_sequence": None,
                        "usage": self.usage(text)},
            "parent_tool_use_id": None, "session_id": self.sid, "uuid": str(uuid.uuid4()),
        })

    def stream_events(self, text):
        events = [
            {"type": "message_start", "message": {"id": "msg_" + uuid.uuid4().hex[:24],
                                                  "type": "message", "role": "assistant",
                                                  "model": self.model, "content": [],
                                                  "usage": self.usage()}},
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": text}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
             "usage": {"output_tokens": max(1, len(text) // 4)}},
            {"type": "message_stop"},
        ]
        for event in events:
            self.emit({"type": "stream_event", "event": event, "session_id": self.sid,
                       "parent_tool_use_id": None, "uuid": str(uuid.uuid4())})

    def user_tool_result(self, tool_use_id, content, is_error=False):
        self.emit({
            "type": "user",
            "message": {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": tool_use_id, "content": content,
                 "is_error": is_error}]},
            "parent_tool_use_id": None, "session_id": self.sid, "uuid": str(uuid.uuid4()),
        })

    def result(self, started, turns, subtype="success", is_error=False, text=None, errors=None):
        ms = int((time.monotonic() - started) * 1000)
        message = {
            "type": "result", "subtype": subtype, "is_error": is_error,
            "duration_ms": ms, "duration_api_ms": ms, "num_turns": turns,
            "session_id": self.sid, "total_cost_usd": round(self.prompts * 0.01, 6),
            "usage": self.usage(text or ""), "modelUsage": {}, "permission_denials": [],
            "uuid": str(uuid.uuid4()),
        }
        if text is not None:
            message["result"] = text
        if errors is not None:
            message["errors"] = errors
        self.emit(message)

    # -- input

    def read_stdin(self):
        try:
            for raw in sys.stdin.buffer:
                self.inbox.put(raw)
        except (AttributeError, OSError, ValueError):
            # No stdin at all (sys.stdin is None) or a broken one: input ended.
            pass
        self.inbox.put(None)

    def take(self, timeout, busy):
        """Handle one inbound line; raise Interrupted when a busy prompt is interrupted."""
        try:
            raw = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        if raw is None:
            # The real CLI exits when its input ends and leaves its Bash
            # tool's processes running.
            sys.stderr.flush()
            os._exit(0)
        try:
            message = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            message = None
        if not isinstance(message, dict):
            if raw.strip():
                sys.stderr.write("Error parsing streaming input line: %r\n" % raw[:200])
                sys.stderr.flush()
            return
        kind = message.get("type")
        if kind == "user":
            self.pending.append(message)
        elif kind == "control_request":
            self.control(message, busy)
        elif kind == "control_response":
            response = message.get("response")
            if isinstance(response, dict) and isinstance(response.get("request_id"), str):
                self.responses[response["request_id"]] = response
        elif kind != "control_cancel_request":
            sys.stderr.write("Unknown message type: %r\n" % (kind,))
            sys.stderr.flush()

    def control(self, message, busy):
        request_id = message.get("request_id")
        request = message.get("request")
        subtype = request.get("subtype") if isinstance(request, dict) else None
        if subtype == "interrupt":
            self.emit({"type": "control_response",
                       "response": {"subtype": "success", "request_id": request_id}})
            if busy:
                raise Interrupted()
        elif subtype in ("initialize", "set_permission_mode", "set_model"):
            if subtype == "set_permission_mode" and request.get("mode") in PERMISSION_MODES:
                self.mode = request["mode"]
            if subtype == "set_model" and isinstance(request.get("model"), str):
                self.model = request["model"]
            self.emit({"type": "control_response",
                       "response": {"subtype": "success", "request_id": request_id,
                                    "response": {}}})
        else:
            self.emit({"type": "control_response",
                       "response": {"subtype": "error", "request_id": request_id,
                                    "error": "Unsupported control request subtype: %s"
                                    % (subtype,)}})

    def wait(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.take(min(remaining, 0.5), busy=True)

    # -- prompts

    def run(self):
        threading.Thread(target=self.read_stdin, daemon=True).start()
        while True:
            if self.pending:
                self.prompt(self.pending.pop(0))
            else:
                self.take(1.0, busy=False)

    def prompt(self, message):
        content = message.get("message", {}).get("content") if isinstance(
            message.get("message"), dict) else None
        if isinstance(content, list):
            content = "\n".join(b.get("text", "") for b in content
                                if isinstance(b, dict) and b.get("type") == "text")
        if not isinstance(content, str):
            sys.stderr.write("Error: user message without text content\n")
            sys.stderr.flush()
            return
        started = time.monotonic()
        self.prompts += 1
        self.history.append(content)
        self.save()
        turn = len(self.history)
        if "ignore-term" in content.split():
            # Before anything is printed: a test may signal once it sees output.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # The real CLI prints its init message for every prompt.
        self.emit({
            "type": "system", "subtype": "init", "cwd": os.getcwd(),
            "session_id": self.sid,
            "tools": [t for t in TOOLS if t not in self.opts["disallowed"]],
            "mcp_servers": [], "model": self.model, "permissionMode": self.mode,
            "slash_commands": [], "apiKeySource": "none",
            "claude_code_version": VERSION, "output_style": "default",
            "agents": [], "skills": [], "plugins": [], "uuid": str(uuid.uuid4()),
        })
        turns = [1]
        tools = []
        try:
            self.behave(content, turn, started, turns, tools)
        except Interrupted:
            for child in tools:
                kill_group(child)
            # What the real CLI (2.1.332) says of a turn it was told to stop.
            self.result(started, turns[0], subtype="error_during_execution", is_error=True,
                        errors=[INTERRUPT_DIAGNOSTIC])

    def behave(self, text, turn, started, turns, tools):
        words = text.split()
        values = {}
        for word in words:
            key, _, value = word.partition(":")
            if key in ("tool-sleep", "slow", "huge", "stderr", "permission", "suggest") and value:
                values[key] = value
        reply = "turn %d: %s" % (turn, text)
        if number(values.get("stderr"), int):
            write_stderr(number(values["stderr"], int))
        if "ignore-term" in words:
            self.wait(600)
        if number(values.get("slow")) is not None:
            self.wait(number(values["slow"]))
        if number(values.get("tool-sleep")) is not None:
            self.tool_sleep(number(values["tool-sleep"]), turns, tools)
        if values.get("permission"):
            reply = self.permission(values["permission"], turns)
        if values.get("suggest"):
            reply = self.suggest(values["suggest"], turns)
        if "ask-user" in words:
            reply = self.ask_user(turns)
        if "exit-plan" in words:
            reply = self.exit_plan(turns)
        if "grandchild" in words:
            child = spawn_sleeper(600)
            record_pid(child.pid)
        if number(values.get("huge"), int) is not None:
            size = number(values["huge"], int)
            reply = (reply + "x" * max(0, size - len(reply)))[:size]
        if "error" in words:
            reply = "API Error: 500 fake failure"
        self.assistant([{"type": "text", "text": reply}], reply)
        if "nonjson" in words:
            self.write(b"this line is not JSON\n")
        if "crash" in words:
            sys.stderr.write("fake_claude: crashing on request\n")
            sys.stderr.flush()
            os._exit(3)
        self.result(started, turns[0], is_error="error" in words, text=reply)

    def tool_use(self, name, tool_input, turns):
        tool_use_id = "toolu_" + uuid.uuid4().hex[:24]
        turns[0] += 1
        self.assistant([{"type": "tool_use", "id": tool_use_id, "name": name,
                         "input": tool_input}])
        return tool_use_id

    def tool_sleep(self, seconds, turns, tools):
        # Started and recorded before the tool_use is printed, so a test that
        # sees the tool_use can rely on the pid file.
        child = spawn_sleeper(seconds)
        tools.append(child)
        record_pid(child.pid)
        tool_use_id = self.tool_use(
            "Bash", {"command": "python3 -c 'import time; time.sleep(%s)'" % seconds,
                     "description": "Sleep for %s seconds" % seconds}, turns)
        while child.poll() is None:
            self.take(0.05, busy=True)
        tools.remove(child)
        self.user_tool_result(tool_use_id, "done")

    def permission(self, tool, turns):
        if tool == "Bash":
            tool_input = {"command": "echo hello", "description": "Say hello"}
        else:
            tool_input = {"file_path": os.path.join(os.getcwd(), "out.txt"), "content": "hello"}
        tool_use_id = self.tool_use(tool, tool_input, turns)
        if tool in self.opts["disallowed"]:
            decision = {"behavior": "deny", "message": "%s is disallowed" % tool}
        elif tool in self.opts["allowed"] or self.mode == "bypassPermissions":
            decision = {"behavior": "allow", "updatedInput": tool_input}
        else:
            decision = self.ask(tool, tool_input, tool_use_id)
        if decision.get("behavior") == "allow":
            updated = decision.get("updatedInput")
            if not isinstance(updated, dict):
                updated = tool_input
            path, content = updated.get("file_path"), updated.get("content")
            outcome = "ok"
            if isinstance(path, str) and isinstance(content, str):
                try:
                    with open(path, "w") as f:
                        f.write(content)
                    outcome = "File created successfully at: %s" % path
                except OSError as e:
                    outcome = "Error writing %s: %s" % (path, e.strerror)
            self.user_tool_result(tool_use_id, outcome)
            return "allowed"
        message = decision.get("message")
        if not isinstance(message, str):
            message = ""
        self.user_tool_result(tool_use_id, message, is_error=True)
        return "denied: %s" % message

    def suggest(self, tool, turns):
        """
        A tool call asked for as the real CLI asks (2.1.x): with its display
        name, a description, and the rules it suggests for "always allow".
        """
        if tool == "Bash":
            tool_input = {"command": "echo hello", "description": "Say hello"}
            extra = {"description": "Say hello", "permission_suggestions": [
                {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "echo hello"}],
                 "behavior": "allow", "destination": "localSettings"}]}
        else:
            tool, name = "Write", "out.txt"
            tool_input = {"file_path": os.path.join(os.getcwd(), name), "content": "hello"}
            extra = {"description": name, "permission_suggestions": [
                {"type": "setMode", "mode": "acceptEdits", "destination": "session"}]}
        tool_use_id = self.tool_use(tool, tool_input, turns)
        decision = self.ask(tool, tool_input, tool_use_id, extra=extra, record=True)
        if decision.get("behavior") != "allow":
            return self.denied(tool_use_id, decision)
        updated = decision.get("updatedInput")
        if not isinstance(updated, dict):
            updated = tool_input
        if tool == "Write" and isinstance(updated.get("file_path"), str):
            with open(updated["file_path"], "w") as f:
                f.write(str(updated.get("content", "")))
            outcome = "File created successfully at: %s" % updated["file_path"]
        else:
            outcome = "hello"
        self.user_tool_result(tool_use_id, outcome)
        rules = decision.get("updatedPermissions")
        return "allowed always" if isinstance(rules, list) and rules else "allowed"

    def ask_user(self, turns):
        """AskUserQuestion, whose answers come back in updatedInput (as the real CLI's)."""
        tool_input = {"questions": [
            {"question": "Which database should the app use?", "header": "Database",
             "options": [{"label": "SQLite", "description": "One file, no server"},
                         {"label": "PostgreSQL", "description": "A server to run"}],
             "multiSelect": False},
            {"question": "What should come with it?", "header": "Extras",
             "options": [{"label": "Migrations", "description": "Versioned schema changes"},
                         {"label": "Seed data", "description": "Rows to start with"},
                         {"label": "Backups", "description": "A nightly dump"}],
             "multiSelect": True},
        ]}
        tool_use_id = self.tool_use("AskUserQuestion", tool_input, turns)
        decision = self.ask("AskUserQuestion", tool_input, tool_use_id,
                            extra={"requires_user_interaction": True}, record=True)
        if decision.get("behavior") != "allow":
            return self.denied(tool_use_id, decision)
        updated = decision.get("updatedInput")
        answers = updated.get("answers") if isinstance(updated, dict) else None
        if not isinstance(answers, dict):
            answers = {}
        said = " ".join('"%s"="%s"' % (q, a if isinstance(a, str) else ", ".join(map(str, a)))
                        for q, a in answers.items())
        self.user_tool_result(tool_use_id, "Your questions have been answered: %s. You can "
                              "now continue with these answers in mind." % said)
        return "answered: " + said

    def exit_plan(self, turns):
        """ExitPlanMode: the real CLI puts the plan (from its plan file) in the input."""
        plan = ("# Plan: a healthcheck\n\n1. Add a `/health` route\n"
                "2. Test it with **pytest**\n\n```sh\nmake test\n```\n")
        plans = os.path.join(os.path.expanduser("~"), ".fake-claude", "plans")
        tool_input = {"plan": plan, "planFilePath": os.path.join(plans, self.sid + ".md")}
        tool_use_id = self.tool_use("ExitPlanMode", {}, turns)
        decision = self.ask("ExitPlanMode", tool_input, tool_use_id,
                            extra={"requires_user_interaction": True}, record=True)
        if decision.get("behavior") != "allow":
            return self.denied(tool_use_id, decision)
        self.user_tool_result(tool_use_id, "User has approved your plan. You can now start "
                              "coding.\n\n## Approved Plan:\n" + plan)
        return "plan approved"

    def denied(self, tool_use_id, decision):
        message = decision.get("message")
        if not isinstance(message, str):
            message = ""
        self.user_tool_result(tool_use_id, message, is_error=True)
        return "denied: %s" % message

    def ask(self, tool, tool_input, tool_use_id, extra=None, record=False):
        request_id = str(uuid.uuid4())
        if extra is None:
            request = {"subtype": "can_use_tool", "tool_name": tool, "input": tool_input,
                       "permission_suggestions": [], "tool_use_id": tool_use_id}
        else:
            # The real CLI's order: name, display name, input, the rest, tool use id.
            request = dict({"subtype": "can_use_tool", "tool_name": tool, "display_name": tool,
                            "input": tool_input}, **extra)
            request["tool_use_id"] = tool_use_id
        self.emit({"type": "control_request", "request_id": request_id, "request": request})
        while request_id not in self.responses:
            self.take(0.5, busy=True)
        response = self.responses.pop(request_id)
        if record:
            record_answer(response)
        if response.get("subtype") == "error":
            return {"behavior": "deny", "message": str(response.get("error", "error"))}
        decision = response.get("response")
        return decision if isinstance(decision, dict) else {"behavior": "deny",
                                                            "message": "bad response"}


def number(text, kind=float):
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        return None
    return value if value >= 0 and value == value and value != float("inf") else None


def write_stderr(size):
    while size > 0:
        n = min(100, size)
        sys.stderr.buffer.write(b"x" * (n - 1) + b"\n")
        size -= n
    sys.stderr.buffer.flush()


def spawn_sleeper(seconds):
    # Like the real Bash tool: its own session, output not on our stdout.
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(%r)" % float(seconds)],
        start_new_session=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def record_pid(pid):
    path = os.environ.get("FAKE_CLAUDE_PIDFILE")
    if path:
        try:
            with open(path, "a") as f:
                f.write("%d\n" % pid)
        except OSError as e:
            sys.stderr.write("fake_claude: cannot record pid in %s: %s\n" % (path, e.strerror))
            sys.stderr.flush()


def record_answer(response):
    path = os.path.join(os.path.expanduser("~"), ".fake-claude", "answers.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(response) + "\n")


def kill_group(child):
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    child.wait()


def main():
    opts = parse_args(sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    fake = Fake(opts)
    try:
        fake.run()
    except Exception as e:
        # Never a traceback: one line, like the real CLI's fatal errors.
        sys.stderr.write("fake_claude: internal error: %r\n" % (e,))
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    main()
