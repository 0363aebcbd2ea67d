#!/usr/bin/python3
# A userspace link emulator for kernels without `tc netem`: each link is a pair of TUN devices
# (one end moved into each namespace of the link by local/topology.ts; a TUN's file descriptor
# keeps working after `ip link set <tun> netns <ns>`). Every IP packet read from one end is held
# for half the link's round trip (plus or minus its jitter), dropped with its loss probability,
# and written to the other end. Packets keep their order per direction (jitter never reorders:
# a packet leaves no earlier than the one before it), as on one real path.
#
# Usage: delay-line.py LINK_ID:TUN_A:TUN_B ...   (Python 3 standard library only)
# Prints {"ready": true} once every TUN exists. Then reads JSON lines on stdin:
#   {"link": "l1", "rttMs": 130, "jitterMs": 3, "loss": 0.05}   set the link's figures
#   {"link": "l1", "up": false}                                  cut it (every packet dropped,
#                                                                those in flight too); true restores
#   {"stats": true}                                              prints per-link counters
# and exits when stdin closes (its parent is gone), which removes every TUN it made.

import fcntl
import heapq
import json
import os
import random
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65536
# Packets held per direction before new ones are dropped (a full router queue); bounds memory.
MAX_HELD = 20000


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Link:
    def __init__(self, link_id, a, b):
        self.id = link_id
        self.fds = (open_tun(a), open_tun(b))
        self.one_way_s = 0.0
        self.jitter_s = 0.0
        self.loss = 0.0
        self.up = True
        # Per direction: when the last packet leaves (order is kept), and how many are held.
        self.last_release = [0.0, 0.0]
        self.held = [0, 0]
        self.counts = {"forwarded": 0, "lost": 0, "cut": 0, "overflow": 0}

    def set(self, msg):
        if "rttMs" in msg:
            self.one_way_s = max(0.0, float(msg["rttMs"])) / 2000.0
        if "jitterMs" in msg:
            self.jitter_s = max(0.0, float(msg["jitterMs"])) / 1000.0
        if "loss" in msg:
            self.loss = min(1.0, max(0.0, float(msg["loss"])))
        if "up" in msg:
            self.up = bool(msg["up"])


def main():
    links = {}
    by_fd = {}
    for spec in sys.argv[1:]:
        link_id, a, b = spec.split(":")
        link = Link(link_id, a, b)
        links[link_id] = link
        by_fd[link.fds[0]] = (link, 0)
        by_fd[link.fds[1]] = (link, 1)
    print(json.dumps({"ready": True}), flush=True)

    held = []  # heap of (release time, sequence, link, direction, packet)
    seq = 0
    stdin = sys.stdin.fileno()
    pending = b""
    watch = [stdin] + list(by_fd)
    while True:
        now = time.monotonic()
        timeout = max(0.0, held[0][0] - now) if held else None
        readable, _, _ = select.select(watch, [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            if fd == stdin:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        control(links, json.loads(line))
                continue
            link, direction = by_fd[fd]
            while True:
                try:
                    packet = os.read(fd, MAX_PACKET)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if not link.up:
                    link.counts["cut"] += 1
                    continue
                if link.loss > 0 and random.random() < link.loss:
                    link.counts["lost"] += 1
                    continue
                if link.held[direction] >= MAX_HELD:
                    link.counts["overflow"] += 1
                    continue
                delay = link.one_way_s
                if link.jitter_s > 0:
                    delay = max(0.0, delay + random.uniform(-link.jitter_s, link.jitter_s))
                release = max(now + delay, link.last_release[direction])
                link.last_release[direction] = release
                link.held[direction] += 1
                seq += 1
                heapq.heappush(held, (release, seq, link, direction, packet))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, link, direction, packet = heapq.heappop(held)
            link.held[direction] -= 1
            if not link.up:
                link.counts["cut"] += 1
                continue
            try:
                os.write(link.fds[1 - direction], packet)
                link.counts["forwarded"] += 1
            except OSError:
                # The far end is down (ip link set ... down): the packet is lost, as on a wire.
                link.counts["lost"] += 1


def control(links, msg):
    if msg.get("stats"):
        print(json.dumps({"stats": {k: l.counts for k, l in links.items()}}), flush=True)
        return
    link = links.get(msg.get("link"))
    if link is None:
        print(json.dumps({"error": "no such link", "link": msg.get("link")}), flush=True)
        return
    link.set(msg)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
