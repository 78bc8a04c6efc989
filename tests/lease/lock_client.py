"""A lock client process for the lock-safety test.

``python lock_client.py URLS NAME ID ITERATIONS MODE``: grants a 2 s lease kept alive by
a thread, takes the lock ``NAME``, and inside the critical section creates the key
``NAME-holder`` only if absent (a txn). If it exists, another client holds the lock at the
same time: it prints VIOLATION and exits 3. MODE ``crash`` prints HOLDING once inside
and waits to be killed; ``normal`` releases and repeats ITERATIONS times, then prints DONE.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import urllib.request


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def call(urls: list[str], path: str, doc: dict, timeout: float = 120.0) -> dict:
    while True:
        for url in urls:
            request = urllib.request.Request(url + path, data=json.dumps(doc).encode(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                body = json.loads(exc.read() or b"{}")
                if body.get("code") != 14:
                    return body
            except OSError:
                pass
        time.sleep(0.2)


def main() -> int:
    urls, name, me, iterations, mode = sys.argv[1].split(","), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    holder = b64(name + "-holder")
    for _ in range(iterations):
        lease = call(urls, "/v3/lease/grant", {"TTL": "2"})["ID"]
        alive = threading.Event()
        alive.set()

        def keepalive(lease=lease, alive=alive) -> None:
            while alive.is_set():
                call(urls, "/v3/lease/keepalive", {"ID": lease}, timeout=5)
                time.sleep(0.4)

        threading.Thread(target=keepalive, daemon=True).start()
        key = call(urls, "/v3/lock/lock", {"name": b64(name), "lease": lease})["key"]
        txn = call(urls, "/v3/kv/txn", {
            "compare": [{"key": holder, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": holder, "value": b64(me), "lease": lease}}],
            "failure": [{"request_range": {"key": holder}}],
        })
        if not txn.get("succeeded"):
            print("VIOLATION", me, json.dumps(txn), flush=True)
            return 3
        print("ACQUIRED", me, flush=True)
        if mode == "crash":
            print("HOLDING", flush=True)
            time.sleep(3600)
        time.sleep(0.1)
        call(urls, "/v3/kv/deleterange", {"key": holder})
        call(urls, "/v3/lock/unlock", {"key": key})
        alive.clear()
        call(urls, "/v3/lease/revoke", {"ID": lease})
    print("DONE", me, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
