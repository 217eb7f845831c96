#!/usr/bin/python3
"""slow_clients.py - opens N connections that send half a request and then
stall, and checks the server stays bounded and responsive: prints the
server's RSS before and after, and /health latency (p50/max over 200
requests) while the stalled connections are open.

    slow_clients.py PORT SERVER_PID [N=500]
"""
import http.client
import socket
import sys
import time


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    before = rss_kb(pid)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n{\"query\": \"" + b"a" * 1000)
        socks.append(s)
    time.sleep(1.0)
    during = rss_kb(pid)
    lat = []
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(200):
        t = time.time()
        c.request("GET", "/health")
        r = c.getresponse()
        r.read()
        lat.append(time.time() - t)
        assert r.status == 200
    c.close()
    for s in socks:
        s.close()
    time.sleep(1.0)
    after = rss_kb(pid)
    lat.sort()
    print("slow clients: %d stalled connections; RSS %d -> %d KiB (%.1f KiB per connection), "
          "after close %d KiB; /health while stalled p50 %.2f ms max %.2f ms"
          % (n, before, during, (during - before) / max(n, 1), after, lat[len(lat) // 2] * 1e3, lat[-1] * 1e3))


if __name__ == "__main__":
    main()
