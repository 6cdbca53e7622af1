"""Certificates and kubeconfigs of the local control plane: what kube-apiserver's x509 authenticator reads."""

from __future__ import annotations

import base64
import ipaddress

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from canopy_devkit.controlplane.certs import CertificateAuthority
from canopy_devkit.controlplane.kubeconfig import render_kubeconfig


def test_client_certificate_carries_user_as_cn_and_groups_as_o() -> None:
    ca = CertificateAuthority.create("test-ca")
    pair = ca.issue_client("system:serviceaccount:ns:sa", ["system:serviceaccounts", "system:authenticated"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "system:serviceaccount:ns:sa"
    ]
    groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["system:serviceaccounts", "system:authenticated"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))


def test_serving_certificate_covers_localhost_and_loopback_ip() -> None:
    pair = CertificateAuthority.create("serving-ca").issue_serving(["localhost", "127.0.0.1"])
    san = x509.load_pem_x509_certificate(pair.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_kubeconfig_embeds_ca_and_client_credentials() -> None:
    ca = CertificateAuthority.create("ca")
    client = ca.issue_client("admin", ["system:masters"])
    config = yaml.safe_load(render_kubeconfig("https://127.0.0.1:6443", ca.cert_pem, "admin", client))
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem
    assert base64.b64decode(user["client-certificate-data"]) == client.cert_pem
    assert base64.b64decode(user["client-key-data"]) == client.key_pem
    assert config["current-context"] == config["contexts"][0]["name"]
