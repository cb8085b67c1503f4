#!/usr/bin/env python3
"""End-to-end test of the web console (web/api.html) in headless Chromium, standard library only.

Starts Debian's chromedriver, opens BASE_URL/api.html in a fresh headless Chromium profile and,
like a person would: checks the page's signer (web/js/bkjs.js) against the test vectors of docs/auth.md
vectors and against tests/sign.py on a few requests, adds an account through the "New account"
form, signs in with it, sends GET /account/get and checks the JSON reply; then the same with
secret scrambling; saves a screenshot (PNG) to SCREENSHOT.

Usage: python3 tests/console.py BASE_URL SCREENSHOT
Env:   CHROMIUM (default /usr/bin/chromium), CHROMEDRIVER (default /usr/bin/chromedriver)
Exit status 0 when every check passed; a failure prints what was expected and what the page
showed on stderr.
"""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sign import sign  # noqa: E402  (the independent Python signer)

WAIT = 20.0
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
]


class Failure(Exception):
    pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class WebDriver:
    """The few W3C WebDriver commands the test needs, over HTTP."""

    def __init__(self, url):
        self.url = url
        self.session = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise Failure("webdriver %s %s: %s" % (method, path, e.read().decode(errors="replace")))

    def s(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.session, path), body)

    def start(self, chromium, profile):
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": FLAGS + ["--user-data-dir=" + profile]},
        }}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        el = self.s("POST", "/element", {"using": "css selector", "value": css})
        return list(el.values())[0]

    def type(self, css, text):
        el = self.find(css)
        self.s("POST", "/element/%s/clear" % el, {})
        self.s("POST", "/element/%s/value" % el, {"text": text})

    def click(self, css):
        self.s("POST", "/element/%s/click" % self.find(css), {})

    def text(self, css):
        return self.s("GET", "/element/%s/text" % self.find(css))

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def quit(self):
        if self.session:
            try:
                self.call("DELETE", "/session/%s" % self.session)
            except Exception:
                pass


def wait_reply(wd, what):
    """Waits until the page shows a finished reply; returns (status, parsed JSON)."""
    deadline = time.monotonic() + WAIT
    status = reply = ""
    while time.monotonic() < deadline:
        status, reply = wd.text("#status"), wd.text("#reply")
        if status and reply:
            try:
                return status, json.loads(reply)
            except ValueError:
                return status, reply
        time.sleep(0.05)
    raise Failure("%s: no reply within %.0f s (status %r, reply %r)" % (what, WAIT, status, reply))


def expect_reply(wd, what, status, check):
    got_status, data = wait_reply(wd, what)
    if got_status != str(status) or not check(data):
        raise Failure("%s: expected status %s, got %s with %s" % (what, status, got_status, data))
    return data


def clear_reply(wd):
    wd.js("document.getElementById('status').textContent='';"
          "document.getElementById('reply').textContent='';")


def account_round(wd, login, secret, name, scrambled):
    """Adds an account through the form, signs in, gets it; returns the account row."""
    if wd.js("return document.getElementById('scramble').checked") != scrambled:
        wd.click("#scramble")
    clear_reply(wd)
    wd.type("#new-login", login)
    wd.type("#new-secret", secret)
    wd.type("#new-name", name)
    wd.click("#add-account")
    added = expect_reply(wd, "add account %s" % login, 200,
                         lambda d: isinstance(d, dict) and len(d.get("id", "")) == 32)
    clear_reply(wd)
    wd.type("#login", login)
    wd.type("#secret", secret)
    wd.click("#signin-button")
    stored_login = wd.js("return bkjs.scramble(arguments[0], arguments[1]).login", login, secret) \
        if scrambled else login
    expect_reply(wd, "sign in as %s" % login, 200,
                 lambda d: isinstance(d, dict) and d.get("login") == stored_login)
    clear_reply(wd)
    wd.type("#url", "/account/get")
    wd.click("#send")
    me = expect_reply(wd, "GET /account/get as %s" % login, 200,
                      lambda d: isinstance(d, dict) and d.get("id") == added["id"]
                      and d.get("name") == name and d.get("login") == stored_login)
    if "secret" in json.dumps(me):
        raise Failure("the reply shows the secret: %s" % me)
    return me


def run(base, shot, chromium, chromedriver):
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bkjs-console-")
    driver = subprocess.Popen([chromedriver, "--port=%d" % port, "--log-path=" + os.path.join(tmp, "chromedriver.log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wd = WebDriver("http://127.0.0.1:%d" % port)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                if wd.call("GET", "/status").get("ready"):
                    break
            except (OSError, Failure):
                pass
            if time.monotonic() > deadline:
                raise Failure("chromedriver did not become ready within %.0f s" % WAIT)
            time.sleep(0.05)
        wd.start(chromium, os.path.join(tmp, "profile"))
        wd.go(base + "/api.html")
        if wd.js("return typeof bkjs") != "object":
            raise Failure("api.html did not load js/bkjs.js")
        vectors = wd.js("return bkjs.vectors()")
        bad = [v for v in vectors if not v["ok"]]
        if len(vectors) != 3 or bad:
            raise Failure("docs/auth.md test vectors: %s" % json.dumps(bad or vectors))
        host = base.split("//", 1)[1]
        cases = [
            (3, "GET", "/account/get?b=2&a=%20x&_count=5", None, None),
            (1, "POST", "/account/update", "application/json", '{"name": "\u00e9"}'),
            (3, "POST", "/x", "application/x-www-form-urlencoded", "z=1&a=2"),
        ]
        for version, method, url, ctype, body in cases:
            js = wd.js("return bkjs.sign({version: arguments[0], login: 'bob', secret: 's\u00e9cret',"
                       " method: arguments[1], url: arguments[2], host: arguments[3],"
                       " contentType: arguments[4], body: arguments[5], expires: 1900000000000})",
                       version, method, url, host, ctype, body)
            py = sign(version, "bob", "s\u00e9cret", method, url, host, ctype,
                      body.encode() if body else None, 1900000000000)
            if js != py:
                raise Failure("bkjs.js and sign.py disagree on %s %s: %s vs %s" % (method, url, js, py))
        stamp = str(int(time.time() * 1000))
        account_round(wd, "alice" + stamp, "s3cret-" + stamp, "Alice", scrambled=False)
        account_round(wd, "bob" + stamp, "b0b-" + stamp, "Bob", scrambled=True)
        history = wd.text("#history")
        if "/account/get" not in history or ("secret=***" not in history and "secret=" in history):
            raise Failure("history: %r" % history)
        wd.screenshot(shot)
        print("console ok: vectors, 3 cross-checks, 2 accounts; screenshot %s" % shot)
    finally:
        wd.quit()
        try:
            os.killpg(driver.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        driver.wait(timeout=10)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    chromedriver = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
    try:
        run(argv[1].rstrip("/"), argv[2], chromium, chromedriver)
    except Failure as e:
        sys.stderr.write("console test failed: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
