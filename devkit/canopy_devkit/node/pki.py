"""Certificates and kubeconfigs of a single-node cluster: one serving CA, one client CA, one user per part.

The API server's certificate is valid for the node's address and the ``kubernetes`` Service (so pods reach
it by its cluster IP and DNS name); the kubelet's serving certificate comes from the same CA. Every
component authenticates with a client certificate whose CN/O are the user and groups Kubernetes' default
RBAC bindings expect (``system:kube-controller-manager``, ``system:node:<name>`` in ``system:nodes``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from canopy_devkit.controlplane.certs import CertificateAuthority, service_account_key_pair
from canopy_devkit.controlplane.kubeconfig import render_kubeconfig, write_private
from canopy_devkit.node.configs import CLUSTER_DOMAIN, KUBERNETES_SERVICE_IP, NODE_NAME, Layout

#: user name -> (CN, groups) of each component's client certificate.
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kubelet": (f"system:node:{NODE_NAME}", ("system:nodes",)),
    "kube-proxy": ("system:kube-proxy", ("system:node-proxier",)),
    # CoreDNS only lists and watches; the API server's own client to the kubelets (logs, exec).
    "coredns": ("canopy-node:coredns", ("system:masters",)),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
}


@dataclass(frozen=True)
class Pki:
    """Paths of the files :func:`write_pki` made."""

    dir: Path

    def kubeconfig(self, user: str) -> Path:
        return self.dir / f"{user}.kubeconfig"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"


def apiserver_hosts(layout: Layout) -> list[str]:
    """Names and addresses the API server's certificate must be valid for."""
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{CLUSTER_DOMAIN}"]
    return [layout.node_ip, KUBERNETES_SERVICE_IP, "127.0.0.1", "localhost", *names]


def write_pki(layout: Layout) -> Pki:
    """Make every certificate, key and kubeconfig of the node under ``layout.pki`` (mode 0600)."""
    pki = Pki(layout.pki)
    pki.dir.mkdir(parents=True, exist_ok=True)
    serving_ca = CertificateAuthority.create("canopy-node-serving-ca")
    client_ca = CertificateAuthority.create("canopy-node-client-ca")
    apiserver = serving_ca.issue_serving(apiserver_hosts(layout))
    kubelet = serving_ca.issue_serving([NODE_NAME, layout.node_ip])
    sa = service_account_key_pair()
    files: dict[str, bytes] = {
        "serving-ca.crt": serving_ca.cert_pem,
        "client-ca.crt": client_ca.cert_pem,
        "apiserver.crt": apiserver.cert_pem,
        "apiserver.key": apiserver.key_pem,
        "kubelet-serving.crt": kubelet.cert_pem,
        "kubelet-serving.key": kubelet.key_pem,
        "sa.pub": sa.cert_pem,
        "sa.key": sa.key_pem,
    }
    for user, (cn, groups) in USERS.items():
        pair = client_ca.issue_client(cn, groups)
        files[f"{user}.crt"] = pair.cert_pem
        files[f"{user}.key"] = pair.key_pem
        text = render_kubeconfig(layout.server_url, serving_ca.cert_pem, cn, pair)
        write_private(pki.kubeconfig(user), text)
    for name, data in files.items():
        write_private(pki.dir / name, data)
    return pki
