"""python-etcd3 (PyPI's `etcd3`, the Python client etcd users have) against one coordinate
endpoint: every call the library offers for keys, transactions, leases, watches, locks,
members and maintenance, with the answers checked. Run by tests/python_client.rs; exits
non-zero, naming the check, if an answer is not etcd's.

usage: etcd3_client.py HOST:PORT MEMBER_COUNT
"""

import hashlib
import io
import sys
import threading

import etcd3


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    members = int(sys.argv[2])
    c = etcd3.client(host=host, port=int(port), timeout=10)

    # Keys: put, get with metadata, prefixes in order, delete, prev_kv.
    c.put("py/a", "1")
    c.put("py/b", "2")
    c.put("py/a", "3")
    value, meta = c.get("py/a")
    check("get value", value, b"3")
    check("version", meta.version, 2)
    check("create before mod", meta.create_revision < meta.mod_revision, True)
    check("key", meta.key, b"py/a")
    check("missing key", c.get("py/none"), (None, None))
    listed = [(v, m.key) for v, m in c.get_prefix("py/")]
    check("prefix", listed, [(b"3", b"py/a"), (b"2", b"py/b")])
    descending = [m.key for _, m in c.get_prefix("py/", sort_order="descend")]
    check("descending", descending, [b"py/b", b"py/a"])
    check("delete", c.delete("py/b"), True)
    check("delete again", c.delete("py/b"), False)
    prev = c.put("py/a", "4", prev_kv=True)
    check("prev kv", prev.prev_kv.value, b"3")

    # Transactions and the compare-and-swap helpers built on them.
    t = c.transactions
    ok, responses = c.transaction(
        compare=[t.value("py/a") == "4", t.version("py/a") > 0],
        success=[t.put("py/t", "yes"), t.get("py/a")],
        failure=[t.put("py/t", "no")],
    )
    check("txn succeeded", ok, True)
    check("txn range", [v for v, _ in responses[1]], [b"4"])
    check("txn put", c.get("py/t")[0], b"yes")
    ok, _ = c.transaction(
        compare=[t.mod("py/a") < 1], success=[t.put("py/t", "x")], failure=[t.delete("py/t")]
    )
    check("txn failed", ok, False)
    check("txn failure branch", c.get("py/t"), (None, None))
    check("replace", c.replace("py/a", "4", "5"), True)
    check("replace stale", c.replace("py/a", "4", "6"), False)
    check("put if not exists", c.put_if_not_exists("py/new", "n"), True)
    check("put if exists", c.put_if_not_exists("py/new", "m"), False)

    # Leases: grant, attach, time to live with keys, refresh, list, revoke deletes the keys.
    lease = c.lease(30)
    c.put("py/leased", "v", lease=lease)
    check("granted ttl", lease.granted_ttl, 30)
    check("remaining ttl", 0 < lease.remaining_ttl <= 30, True)
    check("lease keys", lease.keys, [b"py/leased"])
    check("refresh", lease.refresh()[0].TTL, 30)
    check("lease info", c.get_lease_info(lease.id).grantedTTL, 30)
    check("metadata lease", c.get("py/leased")[1].lease_id, lease.id)
    lease.revoke()
    check("revoked key", c.get("py/leased"), (None, None))

    # Watch: an iterator of events from now, and a callback on a prefix.
    events, cancel = c.watch("py/w")
    seen = []
    done = threading.Event()

    def on_prefix(response):
        seen.extend(response.events)
        if len(seen) >= 2:
            done.set()

    watch_id = c.add_watch_prefix_callback("py/cb/", on_prefix)
    c.put("py/w", "first")
    c.delete("py/w")
    first = next(events)
    check("watch put", (type(first).__name__, first.key, first.value), ("PutEvent", b"py/w", b"first"))
    second = next(events)
    check("watch delete", (type(second).__name__, second.key), ("DeleteEvent", b"py/w"))
    cancel()
    c.put("py/cb/1", "a")
    c.put("py/cb/2", "b")
    check("callback fired", done.wait(10), True)
    check("callback events", [e.key for e in seen[:2]], [b"py/cb/1", b"py/cb/2"])
    c.cancel_watch(watch_id)

    # A lock (a lease and a transaction on the key's existence).
    lock = c.lock("py-lock", ttl=10)
    check("acquire", lock.acquire(timeout=5), True)
    check("is acquired", lock.is_acquired(), True)
    other = c.lock("py-lock", ttl=10)
    check("second holder refused", other.acquire(timeout=1), False)
    check("release", lock.release(), True)
    check("then acquired", other.acquire(timeout=5), True)
    other.release()

    # Members and maintenance.
    listed_members = list(c.members)
    check("member count", len(listed_members), members)
    for m in listed_members:
        check(f"member {m.id} name", m.name, str(m.id))
        check(f"member {m.id} client URLs", len(m.client_urls), 1)
        check(f"member {m.id} peer URLs", len(m.peer_urls), 1)
    status = c.status()
    check("status leader is a member", status.leader.id in [m.id for m in listed_members], True)
    check("status version", status.version.startswith("3.5."), True)
    # Compaction: a watch from before the compaction point is refused with the point.
    revision = c.get("py/a")[1].mod_revision
    c.compact(revision)
    events, cancel = c.watch("py/a", start_revision=revision - 1)
    try:
        next(events)
        raise AssertionError("a watch from a compacted revision got an event")
    except etcd3.exceptions.RevisionCompactedError as e:
        check("compacted revision", e.compacted_revision, revision)
    cancel()
    check("hash is a number", isinstance(c.hash(), int), True)
    # A snapshot stream ends with the SHA-256 of everything before it (etcdctl's check).
    backup = io.BytesIO()
    c.snapshot(backup)
    data = backup.getvalue()
    check("snapshot digest", hashlib.sha256(data[:-32]).digest(), data[-32:])
    c.defragment()
    check("alarms", list(c.list_alarms()), [])
    check("delete prefix", c.delete_prefix("py/").deleted, 4)  # a, new, cb/1, cb/2
    check("prefix emptied", list(c.get_prefix("py/")), [])
    c.close()
    print("python-etcd3: every check passed")


if __name__ == "__main__":
    main()
