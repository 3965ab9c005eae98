"""Loaded by every Python process of a test run (PYTHONPATH): records outbound network attempts.

An audit hook sees every socket.connect / getaddrinfo, including in subprocesses such as
`airflow db migrate`. Loopback and Unix sockets are allowed; anything else is appended to the
file named by MLOPS_NETAUDIT_LOG and the connection is refused, so the test fails loudly.
"""

import ipaddress
import os
import socket
import sys

_LOG = os.environ.get("MLOPS_NETAUDIT_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", socket.gethostname()}


def _is_local(host):
    if host is None or host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _record(event, detail):
    with open(_LOG, "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {sys.argv[:2]} {event} {detail}\n")


def _hook(event, args):
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _record(event, address)
            raise ConnectionRefusedError(f"outbound connection to {address} blocked by the no-network test")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode()
        if not _is_local(host):
            _record(event, host)
            raise socket.gaierror(f"name lookup of {host} blocked by the no-network test")


if _LOG:
    sys.addaudithook(_hook)
