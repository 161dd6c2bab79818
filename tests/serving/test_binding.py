"""Serve listens on `serving.host` (127.0.0.1 by default) and nowhere else it can be kept from.

The served app's Serve processes (the proxy and shipyard's replicas) are found in the GCS actor
table and their listening sockets read with psutil. Two kinds of listener are Ray's, not
configurable, and checked for what they are instead: each actor's core worker port (Ray core)
and each replica's inter-deployment gRPC server, which Ray binds on all interfaces and which
must refuse a call without Ray's token. HAProxy mode binds its stats page and metrics on all
interfaces whatever the host, so `deploy` refuses it; that is checked at the guard (starting
HAProxy needs a Ray of its own, which cannot coexist with the session's).
"""

from __future__ import annotations

import socket

import psutil
import pytest
from trained_models import TEXT_PROJECT

from shipyard.cli import main
from shipyard.cluster.network import is_loopback
from shipyard.errors import UserInputError
from shipyard.serving.deploy import HAPROXY_ENV, check_proxy_binding

PROXY_CLASSES = ("ProxyActor", "HAProxyManager")


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


def beyond_loopback(sockets: set[tuple[str, int]]) -> set[tuple[str, int]]:
    return {(ip, port) for ip, port in sockets if not is_loopback(ip)}


def refuses_without_token(port: int) -> bool:
    """A call to Serve's inter-deployment gRPC service without Ray's token is UNAUTHENTICATED."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest")
        try:
            call(b"", timeout=10)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def test_the_check_sees_a_socket_on_all_interfaces():
    """The assertion below can fail: a socket on 0.0.0.0 is reported, one on 127.0.0.1 is not."""
    with socket.socket() as wide, socket.socket() as narrow:
        wide.bind(("0.0.0.0", 0))
        narrow.bind(("127.0.0.1", 0))
        wide.listen()
        narrow.listen()
        found = beyond_loopback(listening(psutil.Process().pid))
        assert ("0.0.0.0", wide.getsockname()[1]) in found
        assert not any(port == narrow.getsockname()[1] for _, port in found)
    assert not beyond_loopback({("::1", 1), ("::ffff:127.0.0.1", 2), ("127.0.0.2", 3)})
    assert beyond_loopback({("::", 1), ("192.0.2.2", 2)}) == {("::", 1), ("192.0.2.2", 2)}


@pytest.mark.slow
def test_serve_listens_on_loopback_except_rays_authenticated_ports(deployed, serve_port):
    from ray._private import state

    service, _ = deployed
    actors = [a for a in state.actors().values() if a["State"] == "ALIVE"]
    proxies = [a for a in actors if a["ActorClassName"] in PROXY_CLASSES]
    replicas = [a for a in actors if a["ActorClassName"].startswith(f"ServeReplica:{service.app}:")]
    assert proxies, "no Serve proxy actor found"
    assert {a["ActorClassName"].rsplit(":", 1)[1] for a in replicas} >= {"ingress", "champion"}

    for proxy in proxies:
        pids = [proxy["Pid"], *(p.pid for p in psutil.Process(proxy["Pid"]).children(True))]
        sockets = set().union(*(listening(pid) for pid in pids))
        core_worker = {(ip, port) for ip, port in sockets if port == proxy["Address"]["Port"]}
        assert beyond_loopback(sockets - core_worker) == set(), proxy["ActorClassName"]
        assert ("127.0.0.1", serve_port) in sockets

    for replica in replicas:
        sockets = listening(replica["Pid"])
        core_worker = {(ip, port) for ip, port in sockets if port == replica["Address"]["Port"]}
        wide = beyond_loopback(sockets - core_worker)
        # Only Serve's inter-deployment gRPC server (Ray binds it on [::]:0, no setting).
        assert len(wide) <= 1, (replica["ActorClassName"], wide)
        for _, port in wide:
            assert refuses_without_token(port), (replica["ActorClassName"], port)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "192.0.2.2"])
def test_haproxy_mode_is_refused_unless_the_host_is_all_interfaces(monkeypatch, host):
    monkeypatch.setenv(HAPROXY_ENV, "1")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    monkeypatch.delenv("RAY_SERVE_HAPROXY_METRICS_PORT", raising=False)
    with pytest.raises(UserInputError) as refused:
        check_proxy_binding(host)
    message = str(refused.value)
    assert message.startswith(f"{HAPROXY_ENV}=1: ")
    assert f"not only on serving.host ({host})" in message
    assert "stats page on port 18404" in message
    assert "Prometheus metrics on port 9101" in message
    assert "set serving.host: 0.0.0.0" in message


@pytest.mark.parametrize(
    ("env", "host"),
    [
        ({HAPROXY_ENV: "1"}, "0.0.0.0"),
        ({HAPROXY_ENV: "1"}, "::"),
        ({HAPROXY_ENV: "0"}, "127.0.0.1"),
        ({}, "127.0.0.1"),
        # measured: these bind Serve's HTTP listeners (proxy, replicas' ports) on the host only
        ({"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}, "127.0.0.1"),
        ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, "127.0.0.1"),
    ],
)
def test_other_modes_and_an_explicit_all_interfaces_host_pass(env, host):
    check_proxy_binding(host, env)


def test_shipyard_serve_refuses_haproxy_before_starting_anything(
    monkeypatch, project_factory, capsys
):
    monkeypatch.setenv(HAPROXY_ENV, "1")
    project = project_factory(TEXT_PROJECT)
    assert main(["serve", str(project.source_file)]) == 2
    assert f"{HAPROXY_ENV}=1: Ray Serve's HAProxy would also listen" in capsys.readouterr().err
