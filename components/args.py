"""Args shared by the components and the dynamic providers: the TSIG key and the cluster.

Plain dataclasses of ``pulumi.Input`` values, as Pulumi's component convention has
them, and what the providers read back from their props; DNS code is imported only when
called (the providers load this module in the engine's provider host).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import rpc

#: the key of Pulumi's wire marker for special values such as secrets
#: ({SECRET_SIG: <secret sig>, "value": ...}), as the SDK defines it
SECRET_SIG: str = rpc._special_sig_key


def plain(value: Any) -> Any:
    """*value* without Pulumi's secret wrapper, when a provider gets it as one."""
    if isinstance(value, dict) and SECRET_SIG in value:
        return value.get("value")
    return value


def tsig_key(props: Mapping[str, Any]) -> Any:
    """The dnspython TSIG key of a provider's tsigKeyName/tsigAlgorithm/tsigSecret props,
    or None without a secret; ValueError (naming the key, never the secret) when unusable."""
    from bind9_topology.dns.checks import make_tsig_key

    secret = plain(props.get("tsigSecret"))
    if not secret:
        return None
    return make_tsig_key(str(props.get("tsigKeyName") or "transfer-key"),
                         str(props.get("tsigAlgorithm") or "hmac-sha256"), str(secret))


@dataclass(frozen=True)
class TsigArgs:
    """The stack's TSIG key: its name and algorithm, and the secret (kept a pulumi secret)."""

    key_name: str
    algorithm: str
    secret: pulumi.Input[str]


@dataclass(frozen=True)
class KubeAccess:
    """The kubeconfig (a secret) and context of the stack's Kubernetes provider, with which
    the gate and the serials reach pods through the API."""

    kubeconfig: pulumi.Input[str] | None = None
    context: str | None = None

    @staticmethod
    def of_stack() -> KubeAccess:
        kube = pulumi.Config("kubernetes")
        kubeconfig = kube.get_secret("kubeconfig") if kube.get("kubeconfig") else None
        return KubeAccess(kubeconfig, kube.get("context"))
