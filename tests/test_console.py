"""
The web console in a real browser (Playwright driving Debian's Chromium)
against a real ``twistd`` server and the fake CLI; one test (marked
``realcli``) drives the pinned real CLI against the fake Messages API.

Nothing sleeps: every wait is one of Playwright's auto-waiting
expectations, or the harness client's wait for an event. The tests are
skipped where playwright or Chromium is missing, unless ``CI`` is set:
there a missing browser is a failure.

With ``CLAUDEWS_SCREENSHOTS=DIR`` the desktop and phone tests save their
screenshots there (docs/console-*.png come from such a run).
"""

import json
import os
import re
import socket

import pytest

from tests.console_page import CHROMIUM, CHROMIUM_ARGS, missing, sync_playwright
from tests.harness import submit

pytestmark = pytest.mark.integration

if sync_playwright is not None:
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)

SHOTS = os.environ.get("CLAUDEWS_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser():
    reason = missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Console:
    """A claudews server and the URL of the console it serves."""

    def __init__(self, server):
        self.server = server

    def url(self, token=None):
        """The console URL with C{token} (the server's by default) in its fragment."""
        token = self.server.token if token is None else token
        return "http://127.0.0.1:%d/#token=%s" % (self.server.port, token)


@pytest.fixture
def console(make_server):
    """
    Start a server (arguments as for make_server) whose console a browser
    can open: ``console(*args)`` returns a Console.
    """

    def start(*args, **kwargs):
        # A fixed port, so that a restarted server is where the page looks.
        args = ("--listen", "tcp:%d:interface=127.0.0.1" % free_port()) + args
        return Console(make_server(*args, **kwargs))

    return start


@pytest.fixture
def open_page(browser):
    """
    ``open_page(url, width=1280, height=800)``: a page in a fresh browser
    context; at the end, no script error and no CSP violation may have
    happened in it.
    """
    contexts = []

    def open_(url, width=1280, height=800, expected_errors=()):
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.problems = []
        page.on("pageerror", lambda e: page.problems.append("pageerror: %s" % e))
        page.on("console", lambda m: m.type == "error" and page.problems.append("console: " + m.text))
        page.on("dialog", lambda d: page.problems.append("dialog: " + d.message) or d.dismiss())
        page.expected_errors = expected_errors
        contexts.append((context, page))
        page.goto(url)
        return page

    yield open_
    problems = []
    for context, page in contexts:
        for problem in page.problems:
            if not any(re.search(p, problem) for p in page.expected_errors):
                problems.append(problem)
        context.close()
    assert not problems, problems


def open_project(console, open_page):
    """A server, a page signed in to it, and a project "app" created in the page."""
    c = console()
    path = c.server.project_dir("app")
    page = open_page(c.url())
    connected(page)
    create(page, path)
    return c, path, page


def connected(page):
    expect(page.get_by_role("status")).to_have_text("Connected")


def create(page, path):
    page.get_by_label("Project path").fill(path)
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("navigation").get_by_role("link", name=path)).to_have_attribute("aria-current", "page")


def send(page, text):
    box = page.get_by_role("textbox", name="Prompt")
    box.fill(text)
    page.get_by_role("button", name="Send").click()
    expect(box).to_have_value("")


def log(page):
    return page.get_by_role("log")


def outcomes(page):
    return log(page).locator("footer.outcome")


def answers(server):
    """The answers the fake CLI got to its suggest:, ask-user and exit-plan requests."""
    with open(os.path.join(server.home, ".fake-claude", "answers.jsonl")) as f:
        return [json.loads(line)["response"] for line in f]


def project_item(page, path):
    """The entry of C{path} in the page's project list."""
    return page.get_by_role("navigation").get_by_role("listitem").filter(
        has=page.get_by_role("link", name=path))


def prompt_ids(page):
    return page.eval_on_selector_all("[role=log] article.turn", "els => els.map(e => e.dataset.prompt)")


def test_sign_in_from_the_printed_url(console, open_page):
    """The token moves from the URL's fragment to storage; a wrong one is one clear message."""
    # A first start generates the token and prints the console's URL with it.
    c = console(token=None)
    [printed] = [m.group(1) for line in c.server.log
                 for m in [re.search(r"(http://\S+/#token=\S+)", line)] if m]
    c.server.token = printed.split("#token=")[1]
    assert printed == c.url()
    # The refused handshake itself is logged by the browser.
    page = open_page(c.url(token="not-the-token"), expected_errors=[
        r"WebSocket connection to .* failed", r"Failed to load resource"])
    expect(page.get_by_role("alert").filter(has_text="wrong or missing")).to_be_visible()
    assert "#token" not in page.url
    page.get_by_label("Token").fill(c.server.token)
    page.get_by_role("button", name="Sign in").click()
    connected(page)

    page = open_page(c.url())
    connected(page)
    assert "token" not in page.url
    assert page.evaluate("localStorage.getItem('claudews.token')") == c.server.token
    # The next visit needs no token in its URL.
    page.goto(c.url().split("#")[0])
    connected(page)


def test_create_a_project_and_see_the_reply_stream_in(console, open_page):
    """A new project is selected; a prompt's text streams in, then stays, once."""
    c, path, page = open_project(console, open_page)
    # Record every streaming element the page shows, however briefly.
    page.evaluate("""() => {
        window.streamed = [];
        new MutationObserver((records) => {
            for (const r of records) for (const n of r.addedNodes)
                if (n.classList?.contains("streaming")) window.streamed.push(n);
        }).observe(document.getElementById("log"), {childList: true, subtree: true});
    }""")
    send(page, "Say hello")
    expect(outcomes(page)).to_have_text(re.compile("Completed"))
    expect(log(page).get_by_text("turn 1: Say hello")).to_have_count(1)
    assert page.evaluate("window.streamed.map(n => n.textContent)") == ["turn 1: Say hello"]
    expect(page.get_by_role("navigation").get_by_text("idle")).to_be_visible()


def test_a_write_approved_in_the_page_writes_the_file(console, open_page):
    """The permission request shows the diff; Allow lets the CLI write the file."""
    c, path, page = open_project(console, open_page)
    send(page, "permission:Write")
    request = page.get_by_role("group", name="Claude wants to use Write")
    expect(request).to_contain_text(os.path.join(path, "out.txt"))
    expect(request.locator(".diff .add")).to_have_text("+ hello")
    request.get_by_role("button", name="Allow", exact=True).click()
    expect(request).to_have_count(0)
    expect(outcomes(page)).to_have_text(re.compile("Completed"))
    expect(log(page).locator(".tool .tool-permission")).to_have_text("allowed")
    with open(os.path.join(path, "out.txt")) as f:
        assert f.read() == "hello"


def test_deny_with_a_message(console, open_page):
    """Deny sends its message to Claude, and nothing is written."""
    c, path, page = open_project(console, open_page)
    send(page, "permission:Write")
    page.get_by_label("Message to Claude (optional)").fill("not today")
    page.get_by_role("button", name="Deny").click()
    expect(outcomes(page)).to_have_text(re.compile("Completed"))
    expect(log(page)).to_contain_text("denied: not today")
    expect(log(page).locator(".tool .tool-permission")).to_have_text("denied")
    assert not os.path.exists(os.path.join(path, "out.txt"))


def test_cancel_a_running_prompt_and_a_queued_one(console, open_page):
    """Cancel stops the running prompt; a waiting one is cancelled from the queue."""
    c, path, page = open_project(console, open_page)
    send(page, "slow:60")
    send(page, "second one")
    queue = page.get_by_role("list", name="Queue")
    queue.get_by_role("button", name="Cancel queued prompt: second one").click()
    expect(queue).to_be_hidden()
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(outcomes(page)).to_have_count(2)
    expect(outcomes(page).nth(0)).to_contain_text("Cancelled")
    expect(outcomes(page).nth(1)).to_contain_text("Cancelled")
    # The CLI's own error result for an interrupted turn is not shown as a failure.
    expect(page.get_by_role("log").locator(".error-text")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_disabled()


def test_a_server_restart_loses_and_repeats_nothing(console, open_page):
    """After a restart mid-prompt the page resumes with since: every event once, in order."""
    c = console()
    server = c.server
    path = server.project_dir("app")
    # While the server is down the browser logs the failed attempts.
    page = open_page(c.url(), expected_errors=[
        r"WebSocket connection to .* failed", r"Failed to load resource: net::ERR_CONNECTION_REFUSED"])
    connected(page)
    create(page, path)
    send(page, "first")
    expect(outcomes(page)).to_have_count(1)
    send(page, "slow:60")
    expect(log(page).locator("article.turn.running")).to_have_count(1)

    server.stop_cleanly()
    expect(page.get_by_role("status")).not_to_have_text("Connected")
    server.start()
    # Events the page misses while it is away come back with since.
    client = server.connect()
    client.ok("subscribe", path=path)
    client.finished(submit(client, path, "while away"))
    client.close()

    connected(page)
    expect(outcomes(page)).to_have_count(3)
    expect(outcomes(page).nth(1)).to_contain_text("Interrupted")
    send(page, "after")
    expect(outcomes(page)).to_have_count(4)
    for text in ("turn 1: first", "turn 3: while away", "turn 4: after"):
        expect(log(page).get_by_text(text)).to_have_count(1)

    check = server.connect()
    history = check.ok("history", path=path, limit=1000)["events"]
    check.close()
    queued = [e["prompt_id"] for e in history if e["event"] == "prompt.queued"]
    assert prompt_ids(page) == queued
    held = page.evaluate("""() => [...document.querySelectorAll('[role=log] article.turn')].length""")
    assert held == 4


def test_two_pages_on_one_project_stay_in_step(console, open_page):
    """A permission asked in one page is answered in another; both see the outcome."""
    c = console()
    path = c.server.project_dir("app")
    first = open_page(c.url())
    connected(first)
    create(first, path)
    second = open_page(c.url())
    connected(second)
    second.get_by_role("navigation").get_by_role("link", name=path).click()
    expect(log(second)).to_contain_text("No prompts yet")

    send(first, "permission:Write")
    second.get_by_role("button", name="Allow", exact=True).click()
    expect(first.get_by_role("button", name="Allow", exact=True)).to_have_count(0)
    for page in (first, second):
        expect(outcomes(page)).to_have_text(re.compile("Completed"))
        # The fake CLI's reply after an allowed tool is "allowed".
        expect(log(page).locator(".msg.assistant").get_by_text("allowed", exact=True)).to_have_count(1)


def test_model_output_stays_inert(console, open_page):
    """HTML, scripts and javascript: links in model output are shown as text or dropped."""
    c, path, page = open_project(console, open_page)
    send(page, "\n\n".join([
        "<img src=x onerror=window.__xss=1>",
        "<script>window.__xss=2</script>",
        "[click](javascript:window.__xss=3)",
        "<a href=\"javascript:window.__xss=4\">raw</a>",
        "[docs](https://example.com/docs)",
    ]))
    expect(outcomes(page)).to_have_text(re.compile("Completed"))
    reply = log(page).locator(".msg.assistant.markdown")
    expect(reply).to_contain_text("<script>window.__xss=2</script>")
    expect(reply).to_contain_text("<img src=x onerror=window.__xss=1>")
    assert reply.locator("img, script, iframe").count() == 0
    hrefs = reply.locator("a").evaluate_all("as => as.map(a => [a.getAttribute('href'), a.target, a.rel])")
    assert ["https://example.com/docs", "_blank", "noopener noreferrer"] in hrefs
    assert not any(h and not h.startswith("https:") for h, _, _ in hrefs), hrefs
    # A link that lost its javascript: target does nothing when clicked.
    reply.locator("a", has_text="click").click()
    assert page.evaluate("window.__xss") is None


def test_a_phone_sized_screen(console, open_page):
    """At 375 px: one column, the project list as a drawer, touch-sized controls."""
    c = console()
    path = c.server.project_dir("app")
    page = open_page(c.url(), width=375, height=740)
    connected(page)
    nav = page.get_by_role("navigation")
    expect(nav.get_by_label("Project path")).to_be_visible()
    create(page, path)
    expect(page.get_by_label("Project path")).to_be_hidden()
    send(page, "permission:Write")
    expect(page.get_by_role("button", name="Allow", exact=True)).to_be_visible()
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "console-phone.png"))
    page.get_by_role("button", name="Allow", exact=True).click()
    expect(outcomes(page)).to_have_text(re.compile("Completed"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    for name in ("Send", "Cancel", "Projects"):
        box = page.get_by_role("button", name=name, exact=True).bounding_box()
        assert box["height"] >= 44, (name, box)
    page.get_by_role("button", name="Projects").click()
    expect(nav.get_by_role("link", name=path)).to_be_visible()
    nav.get_by_role("link", name=path).click()
    expect(nav.get_by_role("link", name=path)).to_be_hidden()


def test_a_long_history_loads_a_page_at_a_time(console, open_page):
    """Only the newest page comes first; scrolling to the top brings the older ones, once."""
    c = console()
    server = c.server
    path = server.project_dir("app")
    client = server.connect()
    client.ok("project.create", path=path)
    client.ok("subscribe", path=path)
    ids = [submit(client, path, "prompt %d" % i) for i in range(30)]
    client.finished(ids[-1])
    client.close()

    page = open_page(c.url())
    connected(page)
    page.get_by_role("navigation").get_by_role("link", name=path).click()
    expect(log(page).get_by_text("turn 30: prompt 29")).to_be_visible()
    first = len(prompt_ids(page))
    assert 0 < first < 30
    older = page.get_by_role("button", name="Load earlier events")
    pages = 1
    while older.is_visible():
        # The log says the oldest seq it holds: it goes down by one page.
        low = log(page).get_attribute("data-first-seq")
        page.locator("#scroller").evaluate("s => { s.scrollTop = 0; }")
        expect(log(page)).not_to_have_attribute("data-first-seq", low)
        pages += 1
    assert pages > 1
    expect(log(page)).to_have_attribute("data-first-seq", "1")
    expect(log(page).locator("article.turn")).to_have_count(30)
    assert prompt_ids(page) == ids
    for i in range(30):
        expect(log(page).get_by_text("turn %d: prompt %d" % (i + 1, i), exact=True)).to_have_count(1)


def test_the_desktop_layout(console, open_page):
    """At 1280 px the project list and the conversation sit side by side."""
    c = console()
    server = c.server
    paths = [server.project_dir(name) for name in ("api", "web", "docs")]
    client = server.connect()
    for path in paths:
        client.ok("project.create", path=path)
    client.ok("subscribe", path=paths[0])
    submit(client, paths[0], "slow:60 tidy the docs")
    client.close()

    page = open_page(c.url())
    connected(page)
    nav = page.get_by_role("navigation")
    nav.get_by_role("link", name=paths[1]).click()
    send(page, "Explain what `make` does here:\n\n- build\n- **test**")
    expect(outcomes(page)).to_have_count(1)
    send(page, "tool-sleep:0.1 run the tests")
    expect(outcomes(page)).to_have_count(2)
    expect(log(page).locator(".tool .tool-name")).to_have_text("Bash")
    send(page, "permission:Write")
    expect(page.get_by_role("button", name="Allow", exact=True)).to_be_visible()
    expect(nav.get_by_role("listitem").filter(has=page.get_by_role("link", name=paths[0]))).to_contain_text("running")
    nav_box = nav.bounding_box()
    log_box = log(page).bounding_box()
    assert nav_box["x"] + nav_box["width"] <= log_box["x"]
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, "console-desktop.png"))


def test_allow_always_sends_the_suggested_rule(console, open_page):
    """A request with permission_suggestions offers "allow always"; it sends the rule back."""
    c, path, page = open_project(console, open_page)
    send(page, "suggest:Write")
    request = page.get_by_role("group", name="Claude wants to use Write")
    expect(request).to_contain_text(os.path.join(path, "out.txt"))
    always = request.get_by_role("button", name="Allow always: accept edits for this session")
    expect(request.get_by_role("button", name="Allow", exact=True)).to_be_visible()
    always.click()
    expect(request).to_have_count(0)
    expect(outcomes(page)).to_have_text(re.compile("Completed"))
    expect(log(page).locator(".msg.assistant").get_by_text("allowed always", exact=True)).to_have_count(1)
    [answer] = answers(c.server)
    assert answer["behavior"] == "allow"
    assert answer["updatedPermissions"] == [
        {"type": "setMode", "mode": "acceptEdits", "destination": "session"}]
    with open(os.path.join(path, "out.txt")) as f:
        assert f.read() == "hello"


def test_a_question_is_answered_in_the_page(console, open_page):
    """AskUserQuestion shows its questions and choices; the choices go back as answers."""
    c, path, page = open_project(console, open_page)
    send(page, "ask-user")
    request = page.get_by_role("group", name="Claude asks")
    database = request.get_by_role("group", name="Which database should the app use?")
    extras = request.get_by_role("group", name="What should come with it?")
    expect(database).to_contain_text("Database")
    expect(database.get_by_role("radio")).to_have_count(3)  # two options and "Other"
    expect(database).to_contain_text("One file, no server")
    expect(extras.get_by_role("checkbox")).to_have_count(4)
    # However long the questions, the answer buttons stay in sight.
    expect(request.get_by_role("button", name="Answer")).to_be_in_viewport()
    # Every question needs an answer.
    request.get_by_role("button", name="Answer").click()
    expect(request.get_by_role("alert")).to_have_text("Choose an answer for every question.")
    database.get_by_label("SQLite").check()
    extras.get_by_label("Migrations").check()
    extras.get_by_label("Backups").check()
    request.get_by_role("button", name="Answer").click()
    expect(request).to_have_count(0)
    expect(outcomes(page)).to_have_text(re.compile("Completed"))
    [answer] = answers(c.server)
    assert answer["behavior"] == "allow"
    given = answer["updatedInput"]["answers"]
    # The real CLI takes a multiSelect answer as a list or as labels joined with ", ".
    extra = given.get("What should come with it?")
    assert given == {"Which database should the app use?": "SQLite",
                     "What should come with it?": extra}
    assert extra in ("Migrations, Backups", ["Migrations", "Backups"]), extra
    assert [q["question"] for q in answer["updatedInput"]["questions"]] == [
        "Which database should the app use?", "What should come with it?"]
    expect(log(page).locator(".msg.assistant")).to_contain_text(
        '"Which database should the app use?"="SQLite"')


def test_a_plan_is_approved_in_the_page(console, open_page):
    """ExitPlanMode shows its plan as rendered Markdown; Approve plan allows it."""
    c, path, page = open_project(console, open_page)
    send(page, "exit-plan")
    request = page.get_by_role("group", name="Claude has a plan")
    plan = request.locator(".plan")
    expect(plan.get_by_role("heading", name="Plan: a healthcheck")).to_be_visible()
    expect(plan.get_by_role("listitem")).to_have_count(2)
    expect(plan.locator("strong")).to_have_text("pytest")
    expect(plan.locator("pre code")).to_have_text("make test\n")
    request.get_by_role("button", name="Approve plan").click()
    expect(request).to_have_count(0)
    expect(outcomes(page)).to_have_text(re.compile("Completed"))
    expect(log(page).locator(".msg.assistant").get_by_text("plan approved", exact=True)).to_have_count(1)
    [answer] = answers(c.server)
    assert answer["behavior"] == "allow"


def test_the_project_list_follows_the_whole_server(console, open_page):
    """
    A page's list shows, without reload, projects another page creates and
    who waits for an answer; a project the page has left follows the feed again.
    """
    c = console()
    path = c.server.project_dir("app")
    first = open_page(c.url())
    second = open_page(c.url())
    connected(first)
    connected(second)
    expect(second.get_by_role("navigation")).to_contain_text("No projects yet.")
    create(first, path)
    item = project_item(second, path)
    expect(item).to_contain_text("idle")
    expect(item).not_to_contain_text("waiting")

    send(first, "permission:Write")
    expect(item).to_contain_text("1 waiting for you")
    expect(item).to_contain_text("running")
    expect(second).to_have_title("(1) claudews")
    first.get_by_role("button", name="Allow", exact=True).click()
    expect(item).not_to_contain_text("waiting")
    expect(item).to_contain_text("idle")
    expect(second).to_have_title("claudews")

    # The first page asks again, then moves to another project: the request
    # answered elsewhere leaves its list and its title too.
    send(first, "permission:Write")
    expect(first).to_have_title("(1) app · claudews")
    create(first, c.server.project_dir("other"))
    left = project_item(first, path)
    expect(left).to_contain_text("1 waiting for you")
    second.get_by_role("navigation").get_by_role("link", name=path).click()
    second.get_by_role("button", name="Allow", exact=True).click()
    expect(outcomes(second)).to_have_count(2)
    expect(left).not_to_contain_text("waiting")
    expect(first).to_have_title("other · claudews")


@pytest.mark.realcli
def test_the_real_cli_writes_a_file_approved_in_the_page(console, open_page):
    """The pinned Claude Code CLI, against the fake Messages API: a Write allowed in the page."""
    # Imported here: without the real CLI that module skips (in CI, fails)
    # this test alone.
    from tests import fake_api, test_real_cli

    api = fake_api.FakeAPI(test_real_cli.script)
    try:
        c = console(claude_bin=test_real_cli.CLI, env=test_real_cli.cli_env(api))
        path = c.server.project_dir("app")
        target = os.path.join(path, "real.txt")
        page = open_page(c.url())
        connected(page)
        create(page, path)
        send(page, "write %s hello from the page" % target)
        request = page.get_by_role("group", name="Claude wants to use Write")
        expect(request).to_contain_text(target)
        expect(request.locator(".diff .add")).to_have_text("+ hello from the page")
        request.get_by_role("button", name="Allow", exact=True).click()
        expect(request).to_have_count(0)
        expect(outcomes(page)).to_have_text(re.compile("Completed"), timeout=90_000)
        expect(log(page).locator(".tool .tool-permission")).to_have_text("allowed")
        with open(target) as f:
            assert f.read() == "hello from the page"
    finally:
        api.close()
