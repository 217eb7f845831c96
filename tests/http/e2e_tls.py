#!/usr/bin/python3
"""e2e_tls.py - HTTPS end to end (TAP; the Server helper and models of
e2e_http.py): certificates made here by `openssl` under a throwaway
authority; `retro serve --tls-cert --tls-key` answering search, ingest, a
streamed completion, /metrics and the Python client over TLS; clients that
do not trust it, or speak plain HTTP to it, refused while it keeps serving;
SIGHUP putting renewed files in place for new handshakes (and keeping the
old ones when the new files are bad), also while four threads make
handshakes; the start refusing bad pairs with a message that names the
file; the warning for plain HTTP off loopback.

    e2e_tls.py RETRO_BINARY WORK_DIR
"""
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
import e2e_http as E  # noqa: E402  (reads RETRO, WORK from sys.argv)
from e2e_client import ConnectionCount  # noqa: E402
from retrod import Client  # noqa: E402

ok, Server = E.ok, E.Server
CERTS = os.path.join(E.WORK, "tls-certs")


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def path(name):
    return os.path.join(CERTS, name)


def make_key(name, kind):
    if kind == "ec":
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path(name))
    else:
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path(name))


def make_ca(name):
    make_key(name + ".key", "ec")
    openssl("req", "-x509", "-key", path(name + ".key"), "-out", path(name + ".pem"), "-days", "3",
            "-subj", "/CN=%s" % name)


def issue(name, cn, ca="ca", kind="ec", days=1):
    """A certificate for cn (valid for localhost and 127.0.0.1) signed by ca:
    NAME.pem and NAME.key."""
    make_key(name + ".key", kind)
    openssl("req", "-new", "-key", path(name + ".key"), "-out", path(name + ".csr"), "-subj", "/CN=%s" % cn)
    with open(path("san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".pem"), "-CAkey", path(ca + ".key"),
            "-CAcreateserial", "-out", path(name + ".pem"), "-days", str(days), "-extfile", path("san.cnf"))


def start_refused(*args):
    """`retro serve` with args: its exit status and stderr."""
    p = subprocess.run([E.RETRO, "serve", "--data", os.path.join(E.WORK, "tls-refused"), "--port", "0"] + list(args),
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


def run_refusals():
    cases = [
        (("--tls-cert", path("server.pem")), "go together", "a certificate without its key"),
        (("--tls-cert", path("nothing.pem"), "--tls-key", path("server.key")), path("nothing.pem") + ": cannot open",
         "a certificate file that does not exist, named"),
        (("--tls-cert", path("garbage.pem"), "--tls-key", path("server.key")), "not a PEM certificate chain",
         "a file that holds no certificate"),
        (("--tls-cert", path("server.pem"), "--tls-key", path("other.key")), "is not the private key",
         "the key of another certificate"),
        (("--tls-cert", path("server.pem"), "--tls-key", path("server.pem")), "not an unencrypted PEM private key",
         "a certificate given as the key"),
        (("--tls-cert", path("server.pem"), "--tls-key", path("encrypted.key")), "not an unencrypted PEM private key",
         "an encrypted key"),
    ]
    for args, said, name in cases:
        rc, err = start_refused(*args)
        ok(rc == 2 and said in err, "refused at start: " + name, (rc, err))


def served_subject(ctx):
    """The common name of the certificate a new handshake presents."""
    with socket.create_connection(("127.0.0.1", SERVER.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]


def run_serving(s, ctx):
    ok(any("tls on" in l for l in s.log) and s.logged(lambda l: "tls: serving CN=localhost" in l and "level=warn" in l
                                                        and "ends within 14 days" in l),
       "the log says TLS is on, names the certificate and warns that it ends soon", s.log[:4])
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [
        {"id": "t%d" % i, "text": E.doc_text(i, 120)} for i in range(4)]})
    ok(st == 200 and js["documents"] == 4, "ingest over HTTPS", js)
    st, js, _, _ = s.req("POST", "/v1/search", {"query": "end2", "k": 1, "mode": "lexical"})
    ok(st == 200 and js["results"][0]["doc_id"] == "t2", "search over HTTPS", js)
    st, ctype, events = E.read_sse(s, {"prompt": E.doc_text(1, 80), "max_tokens": 20, "stream": True})
    ok(st == 200 and ctype.startswith("text/event-stream") and events[-1] == "[DONE]",
       "a streamed completion over HTTPS ends with [DONE]", events[-2:])
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            not_after = ssl.cert_time_to_seconds(tls.getpeercert()["notAfter"])
    ok(E.metric_value(s, "retro_tls_certificate_expiry_timestamp_seconds") == not_after,
       "/metrics: the certificate's end, as its notAfter", not_after)
    c = Client("https://localhost:%d" % s.port, ssl_context=ctx)
    c.upsert([{"id": "client-doc", "text": E.doc_text(9, 100)}])
    hits = c.search("end9", k=1, mode="lexical")
    ok(hits and hits[0]["doc_id"] == "client-doc", "the Python client over HTTPS with the authority given", hits)
    with ConnectionCount() as count:
        c.close()
        for _ in range(5):
            c.search("end9", k=1, mode="lexical")
    ok(count.n == 1, "... five calls, one connection and one handshake", count.n)
    run_js_client(s)
    try:
        Client("https://localhost:%d" % s.port, timeout=10).health()
        untrusted = "answered"
    except Exception as e:  # urllib wraps the verification error in URLError
        untrusted = repr(e)
    ok("CERTIFICATE_VERIFY_FAILED" in untrusted, "a client that does not trust the authority refuses the server",
       untrusted)
    try:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        c.request("GET", "/health")
        plain = c.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        plain = type(e).__name__
    ok(plain != 200, "plain HTTP to the HTTPS port gets no answer", plain)
    ok(s.req("GET", "/health")[0] == 200, "... and the server goes on serving HTTPS")


JS_SEARCH = """
import { Client } from '%s';
const c = new Client({ url: process.argv[1] });
const hits = await c.search('end3', { k: 1, mode: 'lexical' });
console.log(hits[0].doc_id);
"""


def run_js_client(s):
    """The JavaScript client over HTTPS, the authority given to Node as
    NODE_EXTRA_CA_CERTS (skipped without node)."""
    if not shutil.which("node"):
        ok(True, "the JavaScript client over HTTPS # SKIP node not installed")
        return
    module = os.path.join(HERE, "..", "..", "clients", "js", "retrod.mjs")
    script = JS_SEARCH % os.path.abspath(module)
    url = "https://localhost:%d" % s.port
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=path("ca.pem"))
    p = subprocess.run(["node", "--input-type=module", "-e", script, url], env=env, capture_output=True, text=True,
                       timeout=60)
    ok(p.returncode == 0 and p.stdout.strip() == "t3", "the JavaScript client over HTTPS, the authority in "
       "NODE_EXTRA_CA_CERTS", (p.returncode, p.stdout, p.stderr[-500:]))
    env.pop("NODE_EXTRA_CA_CERTS")
    p = subprocess.run(["node", "--input-type=module", "-e", script, url], env=env, capture_output=True, text=True,
                       timeout=60)
    ok(p.returncode != 0, "... and without it, refused", (p.returncode, p.stdout))


def hup_until(s, ctx, cn, log_says):
    s.p.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and not any(log_says in l for l in s.log):
        time.sleep(0.05)
    return served_subject(ctx), [l for l in s.log if "SIGHUP" in l][-1:]


def run_renewal(s, ctx):
    kept = s.connection(10)
    kept.request("GET", "/health")
    kept.getresponse().read()
    shutil.copy(path("renewed.pem"), path("live.pem"))
    shutil.copy(path("renewed.key"), path("live.key"))
    cn, said = hup_until(s, ctx, "renewed", "now serving CN=renewed")
    ok(cn == "renewed", "SIGHUP: new handshakes get the renewed certificate (an RSA key now)", (cn, said))
    kept.request("GET", "/health")
    ok(kept.getresponse().status == 200, "... and a connection opened before it goes on")
    kept.close()
    with open(path("live.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cn, said = hup_until(s, ctx, "renewed", "not a PEM certificate chain")
    ok(cn == "renewed" and said and "level=error" in said[0] and "still serving" in said[0],
       "SIGHUP with a broken certificate file: an error, and the one before served", (cn, said))
    shutil.copy(path("server.pem"), path("live.pem"))  # the old certificate beside the renewed key
    cn, said = hup_until(s, ctx, "renewed", "is not the private key")
    ok(cn == "renewed" and said and "still serving" in said[0],
       "SIGHUP with a key of another certificate: an error, and the one before served", (cn, said))


def run_reload_stress(ctx):
    """Handshakes from four threads while SIGHUP reloads the certificate
    again and again (the two pairs in turns): every request is answered,
    whichever pair its handshake met (the sanitizer build would see a
    chain or key freed under a handshake)."""
    for ext in ("pem", "key"):
        shutil.copy(path("server." + ext), path("stress." + ext))
    s = Server("tls-stress", "--tls-cert", path("stress.pem"), "--tls-key", path("stress.key"), ssl_context=ctx)
    try:
        answers = []

        def client():
            for _ in range(40):
                try:
                    c = s.connection(10)
                    c.request("GET", "/health")
                    answers.append(c.getresponse().status)
                    c.close()
                except (OSError, http.client.HTTPException) as e:
                    answers.append(repr(e))
        threads = [E.threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        reloads = 0
        while any(t.is_alive() for t in threads):
            pair = ("server", "renewed")[reloads % 2]
            for ext in ("pem", "key"):  # each file replaced at once, the pair one after the other
                shutil.copy(path(pair + "." + ext), path("stress.tmp"))
                os.replace(path("stress.tmp"), path("stress." + ext))
            s.p.send_signal(signal.SIGHUP)
            reloads += 1
            time.sleep(0.01)
        for t in threads:
            t.join()
        served = sum(1 for l in s.log if "SIGHUP: now serving" in l)
        ok(answers == [200] * 160 and served >= 2 and s.p.poll() is None,
           "160 handshakes from four threads while the certificate was reloaded %d times: all answered" % reloads,
           ([a for a in answers if a != 200][:5], served, s.p.poll(),
            [l for l in s.log if "level=" in l and "now serving" not in l and "log reopened" not in l][-6:]))
    finally:
        s.stop()


def run_plain_warning():
    s = Server("tls-plain", "--host", "0.0.0.0", "--api-key", "k")
    try:
        ok(s.logged(lambda l: "level=warn" in l and "plain HTTP on 0.0.0.0" in l),
           "plain HTTP off loopback: a warning that keys and texts travel readable", s.log[:3])
    finally:
        s.stop()
    ctx = ssl.create_default_context(cafile=path("ca.pem"))
    s = Server("tls-public", "--host", "0.0.0.0", "--api-key", "k", "--tls-cert", path("server.pem"),
               "--tls-key", path("server.key"), ssl_context=ctx)
    try:
        ok(s.logged(lambda l: 'msg="ready"' in l) and not any("plain HTTP" in l for l in s.log), "... and none with TLS",
           s.log[:3])
    finally:
        s.stop()


def main():
    if not shutil.which("openssl"):
        print("1..0 # SKIP openssl not installed (deploy/install-deps.sh installs it)")
        return 0
    rc = E.ensure_models()
    if rc is not None:
        return rc
    for d in ("tls-certs", "tls", "tls-stress", "tls-plain", "tls-public", "tls-refused"):
        shutil.rmtree(os.path.join(E.WORK, d), ignore_errors=True)
    os.makedirs(CERTS)
    make_ca("ca")
    make_ca("other-ca")
    issue("server", "localhost")
    issue("renewed", "renewed", kind="rsa", days=90)
    issue("other", "localhost", ca="other-ca")
    openssl("pkey", "-in", path("server.key"), "-out", path("encrypted.key"), "-aes256", "-passout", "pass:secret")
    with open(path("garbage.pem"), "w") as f:
        f.write("not a certificate\n")
    run_refusals()
    shutil.copy(path("server.pem"), path("live.pem"))
    shutil.copy(path("server.key"), path("live.key"))
    ctx = ssl.create_default_context(cafile=path("ca.pem"))
    global SERVER
    SERVER = Server("tls", "--tls-cert", path("live.pem"), "--tls-key", path("live.key"), ssl_context=ctx)
    try:
        run_serving(SERVER, ctx)
        run_renewal(SERVER, ctx)
    finally:
        SERVER.stop()
    run_reload_stress(ctx)
    run_plain_warning()
    E.report_conformance(every_operation=False)
    print("1..%d" % E.n_tests)
    return 1 if E.n_failed else 0


SERVER = None

if __name__ == "__main__":
    sys.exit(main())
