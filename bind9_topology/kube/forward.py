"""Reach each pod's port 53 through the Kubernetes API (port-forward), from anywhere.

`pulumi up` usually runs where the API server is reachable but the pods' and
Services' addresses are not. For every pod, a listener on 127.0.0.1 (an
ephemeral port) forwards each TCP connection over a new port-forward stream of
the API server (the official `kubernetes` client), so the gate's checks (SOA,
TSIG AXFR/IXFR, all over TCP) run unchanged against 127.0.0.1:<port>.

Port-forward carries TCP only: the gate asks over TCP in this mode, over kept
connections (bind9_topology.dns.sessions: a few per pod for a whole gate run, each
carrying one question or transfer after another), so a run opens a few streams per pod,
not one per question. Those sessions end with the run, before the listeners close.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bind9_topology.dns.endpoint import PODS_VIA, VIA_API
from bind9_topology.kube.pods import PodTarget, current_pods

DNS_PORT = 53
#: where a pod without an IP yet is "asked" (TEST-NET-1, RFC 5737: nothing answers)
NO_POD_IP = "192.0.2.1"


def quiet_forward_threads() -> None:
    """The kubernetes client's port-forward threads ("Kubernetes port forward proxy: ...")
    die with ConnectionResetError when the API server closes a stream; Python would print
    each one's traceback to stderr, which the engine shows the user beside the gate's own
    report. Such a stream is already a failed connection the probe reports with its
    reason: drop those tracebacks, keep every other thread's (idempotent)."""
    previous = threading.excepthook
    if getattr(previous, "_bind9_quiet", False):
        return

    def hook(args: Any) -> None:
        name = args.thread.name if args.thread is not None else ""
        if name.startswith("Kubernetes port forward proxy") and isinstance(
                args.exc_value, OSError):
            return
        previous(args)

    hook._bind9_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class KubeApiError(Exception):
    """The API could not be asked (kubeconfig, context, permissions): a clear message."""


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A client for the same cluster as the stack's Kubernetes provider.

    *kubeconfig* is a path or the kubeconfig's content (as `kubernetes:kubeconfig`
    takes it); None means the default (KUBECONFIG, then ~/.kube/config).
    """
    import yaml
    from kubernetes import config as kconfig

    try:
        if kubeconfig and "\n" in kubeconfig:
            return kconfig.new_client_from_config_dict(yaml.safe_load(kubeconfig),
                                                       context=context)
        return kconfig.new_client_from_config(config_file=kubeconfig or None, context=context)
    except Exception as exc:  # the client raises ConfigException, TypeError, OSError, ...
        raise KubeApiError(
            f"cannot load the kubeconfig ({exc}); the gate reaches pods through the same "
            "kubeconfig and context as the stack's Kubernetes provider (KUBECONFIG, "
            "kubernetes:kubeconfig, kubernetes:context), or set bind9-topology:gate.via "
            "to direct") from None


def find_pods(client: Any, namespace: str, instance: str) -> list[PodTarget]:
    """The pods of the instance's Deployment's current ReplicaSet (see kube_pods)."""
    from kubernetes.client import AppsV1Api, CoreV1Api
    from kubernetes.client.exceptions import ApiException

    apps, core = AppsV1Api(client), CoreV1Api(client)
    selector = f"instance={instance}"
    try:
        deployment = apps.read_namespaced_deployment(instance, namespace)
        replicasets = apps.list_namespaced_replica_set(namespace, label_selector=selector)
        pods = core.list_namespaced_pod(namespace, label_selector=selector)
    except ApiException as exc:
        raise KubeApiError(
            f"cannot list the pods of {namespace}/{instance} through the API "
            f"({exc.status} {exc.reason}); the gate needs get on deployments and list on "
            "replicasets and pods in that namespace, and create on pods/portforward"
        ) from None
    except Exception as exc:  # connection refused, TLS, timeouts
        raise KubeApiError(f"cannot reach the Kubernetes API: {exc}") from None
    plain = client.sanitize_for_serialization
    return current_pods(instance, plain(deployment), [plain(r) for r in replicasets.items],
                        [plain(p) for p in pods.items])


def existing_deployments(namespace: str, kubeconfig: str | None = None,
                         context: str | None = None, timeout: float = 5.0,
                         ) -> frozenset[str] | None:
    """The names of the Deployments in *namespace* now, or None when the API cannot be
    asked (no kubeconfig, no cluster, no permission): one list call, bounded.

    The region staggers an instance's roll behind the previous instance's only where the
    instance already runs (ADR 21): creating it rolls nothing. An unknown answer keeps
    the stagger."""
    try:
        from kubernetes.client import AppsV1Api

        client = api_client(kubeconfig, context)
        listed = AppsV1Api(client).list_namespaced_deployment(
            namespace, _request_timeout=timeout)
        return frozenset(str(d.metadata.name) for d in listed.items)
    except Exception:  # KubeApiError, ApiException, connection refused, TLS, timeouts
        return None


@dataclass
class _Listener:
    pod: PodTarget
    sock: socket.socket
    port: int
    threads: list[threading.Thread] = field(default_factory=list)


class PodForwarder:
    """Local TCP listeners, one per pod, each connection a port-forward to the pod's :53.

    Use as a context manager; every socket and thread ends on exit.
    """

    def __init__(self, client: Any, pods: Sequence[PodTarget], remote_port: int = DNS_PORT):
        quiet_forward_threads()
        self._client = client
        self._remote = remote_port
        self._stop = threading.Event()
        self.listeners: dict[str, _Listener] = {}
        for pod in pods:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            sock.settimeout(0.2)
            listener = _Listener(pod, sock, sock.getsockname()[1])
            self.listeners[pod.name] = listener
            thread = threading.Thread(target=self._accept, args=(listener,), daemon=True,
                                      name=f"forward-{pod.name}")
            listener.threads.append(thread)
            thread.start()

    def port_of(self, pod: PodTarget) -> int:
        return self.listeners[pod.name].port

    def _accept(self, listener: _Listener) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._pipe, args=(listener.pod, conn), daemon=True)
            thread.start()

    def _pipe(self, pod: PodTarget, conn: socket.socket) -> None:
        from kubernetes.client import CoreV1Api
        from kubernetes.stream import portforward

        try:
            forward = portforward(CoreV1Api(self._client).connect_get_namespaced_pod_portforward,
                                  pod.name, pod.namespace, ports=str(self._remote))
            remote = forward.socket(self._remote)
        except Exception:  # the probe on `conn` sees a closed connection: a clear reason
            conn.close()
            return
        try:
            remote.setblocking(True)
            conn.setblocking(True)
            pair = (conn, remote)
            while not self._stop.is_set():
                readable, _, _ = select.select(pair, [], [], 0.2)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    (remote if src is conn else conn).sendall(data)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with contextlib.suppress(Exception):
                remote.close()
            with contextlib.suppress(Exception):
                forward.close()

    def close(self) -> None:
        from bind9_topology.dns.sessions import default_sessions

        # the process's kept connections to these listeners end first: a later listener
        # on the same port is another forward
        default_sessions().close(("127.0.0.1", listener.port)
                                 for listener in self.listeners.values())
        self._stop.set()
        for listener in self.listeners.values():
            with contextlib.suppress(OSError):
                listener.sock.close()
        for listener in self.listeners.values():
            for thread in listener.threads:
                thread.join(timeout=2)

    def __enter__(self) -> PodForwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def forwarded_pods(client: Any, namespace: str, instances: Sequence[str]) -> Iterator[
        tuple[list[tuple[PodTarget, int]], PodForwarder]]:
    """Every current pod of *instances*, each with its local forwarded port."""
    pods = [p for inst in instances for p in find_pods(client, namespace, inst)]
    with PodForwarder(client, pods) as forwarder:
        yield [(p, forwarder.port_of(p)) for p in pods], forwarder


@contextlib.contextmanager
def gate_endpoints(
    primaries: Sequence[dict[str, Any]], secondaries: Sequence[dict[str, Any]],
    kubeconfig: str | None = None, context: str | None = None,
) -> Iterator[tuple[list[Any], list[Any]]]:
    """The gate's endpoints: direct ones as given, instances through the API, one per pod.

    An item is {name, host, port} (direct) or {name, instance, namespace, via:
    "kubernetes-api"}; each of the latter becomes every current pod of the instance,
    reached over a port-forward and labelled with the pod, its node and the instance.
    """
    with endpoint_resolver([*primaries, *secondaries], kubeconfig, context) as expand:
        yield expand(primaries), expand(secondaries)


@contextlib.contextmanager
def endpoint_resolver(
    items: Sequence[dict[str, Any]], kubeconfig: str | None = None, context: str | None = None,
    *, skip_without_pods: bool = False,
) -> Iterator[Callable[[Sequence[dict[str, Any]]], list[Any]]]:
    """One lookup of the pods and one set of port-forwards for every item given; yields
    ``expand(items)`` -> endpoints, for any of those items (many zones of one gate share
    the instances' pods, so they share the forwards too). An instance without pods is a
    KubeApiError, or no endpoints with *skip_without_pods* (what serves nothing yet, e.g.
    before its first rollout, has no serial to ask for).

    The run ends with it: the process's kept connections (bind9_topology.dns.sessions)
    to every endpoint it handed out are closed on the way out, before the listeners."""
    from bind9_topology.dns.checks import Endpoint
    from bind9_topology.dns.sessions import default_sessions

    handed: set[tuple[str, int]] = set()
    lock = threading.Lock()

    def hand(endpoints: list[Any]) -> list[Any]:
        with lock:
            handed.update((e.host, e.port) for e in endpoints)
        return endpoints

    def direct(items: Sequence[dict[str, Any]]) -> list[Any]:
        return hand([Endpoint(str(i["host"]), int(i.get("port") or DNS_PORT),
                              str(i.get("name") or ""))
                     for i in items if i.get("via") not in PODS_VIA])

    through_api = [i for i in items if i.get("via") in PODS_VIA]
    if not through_api:
        try:
            yield direct
        finally:
            default_sessions().close(handed)
        return
    client = api_client(kubeconfig, context)
    pods_of: dict[tuple[str, str], list[PodTarget]] = {}
    for item in through_api:
        key = (str(item["namespace"]), str(item["instance"]))
        if key not in pods_of:
            pods_of[key] = find_pods(client, *key)
            if not pods_of[key] and not skip_without_pods:
                raise KubeApiError(
                    f"instance {key[0]}/{key[1]} has no pods of its Deployment's current "
                    f"ReplicaSet: check `kubectl -n {key[0]} get deploy,rs,pods -l "
                    f"instance={key[1]}`")
    # pod-network: each pod at its own IP (UDP and TCP), no stream through the API; a pod
    # without an IP yet is asked at an address that refuses (TEST-NET-1), so the gate
    # names it as unreachable rather than skipping it
    forwarded = {key for item in through_api if item.get("via") == VIA_API
                 for key in [(str(item["namespace"]), str(item["instance"]))]}
    every = [p for key, pods in pods_of.items() if key in forwarded for p in pods]
    with PodForwarder(client, every) as forwarder:

        def pod_endpoint(item: dict[str, Any], pod: PodTarget) -> Any:
            if item.get("via") == VIA_API:
                return Endpoint("127.0.0.1", forwarder.port_of(pod), pod.label, tcp_only=True)
            return Endpoint(pod.ip or NO_POD_IP, DNS_PORT, pod.label)

        def expand(items: Sequence[dict[str, Any]]) -> list[Any]:
            out = direct(items)
            for item in items:
                if item.get("via") in PODS_VIA:
                    key = (str(item["namespace"]), str(item["instance"]))
                    out += hand([pod_endpoint(item, p) for p in pods_of[key]])
            return out

        try:
            yield expand
        finally:
            default_sessions().close(handed)
