#!/usr/bin/env python3
"""TCP throughput probe of bench/compression.sh, run inside the workers' network namespaces
(`ip netns exec NS python3 probe.py …`); not meant to be run alone.

  probe.py serve HOST PORT       accepts one connection, reads until it closes, prints
                                 "<bytes> <seconds>" (first byte to last byte, at the receiver)
  probe.py send HOST PORT SECS   connects (retrying for 5 s) and writes as fast as it can for SECS
"""
import socket
import sys
import time


def serve(host, port):
    with socket.create_server((host, port)) as server:
        server.settimeout(30)
        connection, _ = server.accept()
        with connection:
            connection.settimeout(30)
            total = 0
            first = last = None
            while True:
                chunk = connection.recv(1 << 20)
                if not chunk:
                    break
                now = time.perf_counter()
                if first is None:
                    first = now
                    total = 0  # time starts at the first byte: count what follows it
                else:
                    total += len(chunk)
                last = now
    print(total, (last - first) if first is not None else 0.0)


def send(host, port, seconds):
    deadline = time.time() + 5
    while True:
        try:
            connection = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    block = b"\x5a" * (1 << 16)
    end = time.perf_counter() + seconds
    with connection:
        while time.perf_counter() < end:
            connection.sendall(block)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(f"usage: {sys.argv[0]} serve HOST PORT | send HOST PORT SECONDS")
