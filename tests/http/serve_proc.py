"""serve_proc.py - `retro serve` as a child process for the Python end-to-end
tests (tests/http/e2e_http.py, tests/server/test_serve_crash.py): started on a
random loopback port (--port 0), the port read from its log, its stderr kept
in .log, and waited for until /ready answers 200 (the daemon listens while
the engine loads)."""
import http.client
import os
import re
import subprocess
import threading
import time


class ServeProcess:
    def __init__(self, cmd, logfile=None, timeout=60, ssl_context=None):
        """cmd: the whole command line; logfile: the --log file when the log
        goes there, not to stderr (then polled for the port); ssl_context:
        the client side's, for a server started with --tls-cert."""
        self.log = []
        self.ssl_context = ssl_context
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.port = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            if logfile:
                time.sleep(0.05)
                line = ""
                if os.path.exists(logfile):
                    with open(logfile) as f:
                        line = "".join(l for l in f if "listening on" in l)
                if not line and self.p.poll() is None:
                    continue
            else:
                line = self.p.stderr.readline().decode("utf-8", "replace")
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on [^ ]*:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            raise RuntimeError("server did not start: " + "".join(self.log))
        self.t = threading.Thread(target=self._drain, daemon=True)
        self.t.start()
        while time.time() < deadline:
            if self._ready() == 200:
                return
            if self.p.poll() is not None:
                raise RuntimeError("server exited: " + "".join(self.log))
            time.sleep(0.05)
        raise RuntimeError("server not ready")

    def logged(self, pred, timeout=10):
        """Whether a line of the log passes pred within timeout seconds: a
        thread reads the log, so a line the server wrote before it answered
        may not be in self.log yet."""
        deadline = time.time() + timeout
        while not any(pred(l) for l in list(self.log)):
            if time.time() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _drain(self):
        for line in self.p.stderr:
            self.log.append(line.decode("utf-8", "replace"))

    def connection(self, timeout):
        """An http.client connection to the server, HTTPS when it serves TLS."""
        if self.ssl_context:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.ssl_context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def _ready(self):
        """GET /ready's status, None when the request failed."""
        try:
            c = self.connection(10)
            c.request("GET", "/ready")
            st = c.getresponse().status
            c.close()
            return st
        except OSError:
            return None
