"""Kopf and the operator's own client log in through one loader (``k8s.client``), exec plugins included.

Kopf's own kubeconfig parser runs no exec plugins (EKS ``aws eks get-token``, GKE ``gke-gcloud-auth-plugin``,
``kubectl oidc-login``) and could pick another context than the operator's client. Here the login handler is
called directly, as Kopf calls it, on kubeconfigs in tmp_path; nothing connects anywhere.
"""

from __future__ import annotations

import base64
import datetime
import inspect
import json
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.config import incluster_config

from canopy_devkit.controlplane.certs import CertificateAuthority
from canopy_operator.handlers.experiment import login
from canopy_operator.k8s import client as k8s_client
from canopy_operator.k8s.client import Credentials, JsonApiClient, NoConfiguration, api_client, load_credentials
from canopy_operator.k8s.experiments import default_namespace
from canopy_operator.service.settings import Settings

SERVER = "https://api.example.invalid:6443"
EXEC_API = "client.authentication.k8s.io/v1beta1"

PLUGIN = """\
import json, pathlib, sys
here = pathlib.Path(sys.argv[1])
count = here / "count"
count.write_text(str(int(count.read_text()) + 1 if count.exists() else 1))
status = {{"token": (here / "token").read_text().strip(), "expirationTimestamp": {expires!r}}}
print(json.dumps({{"apiVersion": {api!r}, "kind": "ExecCredential", "status": status}}))
"""


@pytest.fixture(autouse=True)
def outside_a_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hermetic: not in a pod (even when the tests run in one), no $KUBECONFIG, no ~/.kube/config."""
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


def kubeconfig(
    path: Path, users: dict[str, dict[str, Any]], clusters: dict[str, dict[str, Any]], contexts: dict[str, Any]
) -> Path:
    """A kubeconfig of named users, clusters and contexts (``(cluster, user, namespace)``); the first is current."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [
            {"name": n, "context": {"cluster": c, "user": u, **({"namespace": ns} if ns else {})}}
            for n, (c, u, ns) in contexts.items()
        ],
        "current-context": next(iter(contexts)),
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def single(path: Path, user: dict[str, Any], cluster: dict[str, Any], namespace: str | None = "team-a") -> Path:
    return kubeconfig(path, {"me": user}, {"c": {"server": SERVER, **cluster}}, {"ctx": ("c", "me", namespace)})


async def log_in(settings: Settings | None = None) -> kopf.ConnectionInfo:
    """What Kopf does at start-up and after a 401: call the login handler with its keyword arguments."""
    memo = kopf.Memo() if settings is None else kopf.Memo(settings=settings)
    handler: Any = login  # typed by Kopf's decorator as a handler taking every keyword Kopf may pass
    info = await handler(memo=memo, settings=kopf.OperatorSettings(), logger=logging.getLogger("test"))
    assert isinstance(info, kopf.ConnectionInfo)
    return info


async def own_client(path: Path, context: str | None = None) -> tuple[str | None, str | None, Any]:
    """The operator's own client's server, Authorization value and configuration (the client is closed)."""
    api = await api_client(str(path), context=context)
    try:
        cfg = api.configuration
        return cfg.host, await cfg.get_api_key_with_prefix("BearerToken"), cfg
    finally:
        await api.close()


def content(path: object) -> bytes:
    """A file Kopf and the client will read (the loader writes ``*-data`` to private temporary files)."""
    assert isinstance(path, str), path
    return Path(path).read_bytes()


def test_the_login_handler_is_the_plain_function_kopf_registered() -> None:
    assert inspect.iscoroutinefunction(login)
    registered = kopf.get_default_registry()._activities.get_all_handlers()  # no public listing in Kopf 1.45
    assert any(handler.fn is login for handler in registered)


@pytest.mark.parametrize("inline", [False, True], ids=["files", "data"])
async def test_a_client_certificate_reaches_kopf_and_the_client_as_files_ssl_loads(
    tmp_path: Path, inline: bool
) -> None:
    ca = CertificateAuthority.create("test-ca")
    pair = ca.issue_client("alice", ["devs"])
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "alice.crt").write_bytes(pair.cert_pem)
    (tmp_path / "alice.key").write_bytes(pair.key_pem)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    if inline:
        cluster = {"certificate-authority-data": b64(ca.cert_pem)}
        user = {"client-certificate-data": b64(pair.cert_pem), "client-key-data": b64(pair.key_pem)}
    else:  # relative paths: to the kubeconfig's directory, as kubectl reads them
        cluster = {"certificate-authority": "ca.crt"}
        user = {"client-certificate": "alice.crt", "client-key": "alice.key"}
    path = single(tmp_path / "config", user, cluster)

    info = await log_in(Settings(kubeconfig=str(path)))

    assert (info.server, info.default_namespace, info.insecure) == (SERVER, "team-a", False)
    assert (info.token, info.scheme, info.username, info.expiration) == (None, None, None, None)
    assert content(info.ca_path) == ca.cert_pem
    assert content(info.certificate_path) == pair.cert_pem
    assert content(info.private_key_path) == pair.key_pem
    if not inline:
        assert info.certificate_path == str(tmp_path / "alice.crt")
    assert isinstance(info.as_ssl_context(), ssl.SSLContext)  # Kopf's session loads the CA and the key pair
    host, header, cfg = await own_client(path)
    assert (host, header) == (SERVER, None)
    assert (cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file) == (
        info.ca_path,
        info.certificate_path,
        info.private_key_path,
    )


async def test_a_token_and_its_namespace_reach_kopf_and_the_client(tmp_path: Path) -> None:
    path = single(tmp_path / "config", {"token": "abc.def"}, {})

    info = await log_in(Settings(kubeconfig=str(path)))

    assert (info.server, info.scheme, info.token, info.default_namespace) == (SERVER, "Bearer", "abc.def", "team-a")
    assert info.as_http_headers() == {"Authorization": "Bearer abc.def"}
    assert info.expiration is None
    host, header, _ = await own_client(path)
    assert (host, header) == (SERVER, "Bearer abc.def")


async def test_insecure_skip_tls_verify_is_insecure_for_both(tmp_path: Path) -> None:
    path = single(tmp_path / "config", {"token": "t"}, {"insecure-skip-tls-verify": True}, namespace=None)

    info = await log_in(Settings(kubeconfig=str(path)))

    assert (info.insecure, info.ca_path, info.default_namespace) == (True, None, None)
    assert info.as_ssl_context().verify_mode == ssl.CERT_NONE
    _, _, cfg = await own_client(path)
    assert cfg.verify_ssl is False


async def test_a_username_and_password_become_basic_auth(tmp_path: Path) -> None:
    path = single(tmp_path / "config", {"username": "bob", "password": "s3cr:et"}, {})

    info = await log_in(Settings(kubeconfig=str(path)))

    assert (info.username, info.password, info.scheme, info.token) == ("bob", "s3cr:et", None, None)
    _, header, _ = await own_client(path)
    assert header == "Basic " + base64.b64encode(b"bob:s3cr:et").decode("ascii")


def exec_kubeconfig(tmp_path: Path, expires: datetime.datetime) -> Path:
    """A user whose credential comes from a plugin that prints ``tmp_path/token`` and counts its runs."""
    stamp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN.format(expires=stamp, api=EXEC_API), encoding="utf-8")
    (tmp_path / "token").write_text("tok-1", encoding="utf-8")
    user = {"exec": {"apiVersion": EXEC_API, "command": sys.executable, "args": [str(script), str(tmp_path)]}}
    return single(tmp_path / "config", user, {}, namespace="from-context")


def runs(tmp_path: Path) -> int:
    return int((tmp_path / "count").read_text())


def in_(**delta: float) -> datetime.datetime:
    return (datetime.datetime.now(datetime.UTC) + datetime.timedelta(**delta)).replace(microsecond=0)


async def test_an_exec_plugin_logs_in_kopf_and_the_client_and_runs_again_at_each_login(tmp_path: Path) -> None:
    expires = in_(hours=1)
    path = exec_kubeconfig(tmp_path, expires)

    info = await log_in(Settings(kubeconfig=str(path)))

    assert (info.server, info.scheme, info.token) == (SERVER, "Bearer", "tok-1")
    assert info.expiration == expires  # Kopf logs in again at this time, before the API server says 401
    assert info.default_namespace == "from-context"
    assert runs(tmp_path) == 1
    host, header, _ = await own_client(path)
    assert (host, header) == (SERVER, "Bearer tok-1")
    assert runs(tmp_path) == 2  # one run per load: the token is current, the client does not run it again

    (tmp_path / "token").write_text("tok-2", encoding="utf-8")  # the identity provider issues a new token
    again = await log_in(Settings(kubeconfig=str(path)))  # what Kopf does after a 401 or the expiration

    assert (again.token, again.expiration) == ("tok-2", expires)
    assert runs(tmp_path) == 3


async def test_the_operators_client_renews_an_exec_token_before_it_expires(tmp_path: Path) -> None:
    path = exec_kubeconfig(tmp_path, in_(minutes=1))  # inside the loader's 5-minute margin: renew at the next call
    api = await api_client(str(path))
    try:
        (tmp_path / "token").write_text("tok-2", encoding="utf-8")
        assert await api.configuration.get_api_key_with_prefix("BearerToken") == "Bearer tok-2"
        assert runs(tmp_path) == 2
    finally:
        await api.close()


async def test_the_kubeconfig_comes_from_kubeconfig_in_the_environment_when_the_memo_has_no_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(single(tmp_path / "config", {"token": "from-env"}, {})))

    info = await log_in()  # `kopf run -m canopy_operator.handlers`: the settings are read from the environment

    assert info.token == "from-env"


async def test_no_configuration_at_all_stops_the_operator_instead_of_retrying() -> None:
    with pytest.raises(kopf.PermanentError, match="no kubeconfig file"):
        await log_in(Settings())
    with pytest.raises(NoConfiguration):
        await api_client()


async def test_in_a_pod_the_service_account_wins_for_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-token\n", encoding="utf-8")
    (sa / "ca.crt").write_bytes(CertificateAuthority.create("cluster-ca").cert_pem)
    (sa / "namespace").write_text("canopy-system", encoding="utf-8")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(sa / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(sa / "ca.crt"))
    monkeypatch.setattr(k8s_client, "SERVICE_ACCOUNT_NAMESPACE", sa / "namespace")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    path = single(tmp_path / "config", {"token": "not-this-one"}, {})

    info = await log_in(Settings(kubeconfig=str(path)))

    assert (info.server, info.scheme, info.token) == ("https://10.96.0.1:443", "Bearer", "sa-token")
    assert (info.ca_path, info.default_namespace, info.expiration) == (str(sa / "ca.crt"), "canopy-system", None)
    host, _, cfg = await own_client(path)
    assert (host, cfg.ssl_ca_cert) == (info.server, info.ca_path)


async def test_a_context_picks_its_server_and_namespace_for_kopf_and_the_client(tmp_path: Path) -> None:
    users = {"u1": {"token": "one"}, "u2": {"token": "two"}}
    clusters = {"c1": {"server": "https://one.example.invalid"}, "c2": {"server": "https://two.example.invalid"}}
    path = kubeconfig(tmp_path / "config", users, clusters, {"first": ("c1", "u1", "a"), "second": ("c2", "u2", "b")})

    chosen = await load_credentials(str(path), context="second")  # what `--context second` selects
    host, header, _ = await own_client(path, context="second")

    assert (chosen.server, chosen.token, chosen.default_namespace) == ("https://two.example.invalid", "two", "b")
    assert (host, header) == (chosen.server, "Bearer two")
    assert default_namespace(str(path), "second") == "b"  # the namespace `kubectl pexp` defaults to agrees

    current = await log_in(Settings(kubeconfig=str(path)))  # no context: the kubeconfig's current one
    assert (current.server, current.token, current.default_namespace) == ("https://one.example.invalid", "one", "a")
    switched = yaml.safe_load(path.read_text(encoding="utf-8")) | {"current-context": "second"}
    path.write_text(yaml.safe_dump(switched), encoding="utf-8")
    after = await log_in(Settings(kubeconfig=str(path)))  # read at each login, like kubectl
    assert (after.server, after.default_namespace) == ("https://two.example.invalid", "b")
    host, header, _ = await own_client(path)
    assert (host, header) == (after.server, "Bearer two")


def test_credentials_keep_the_token_and_password_out_of_their_repr() -> None:
    shown = repr(Credentials(server=SERVER, scheme="Bearer", token="secret-token", username="u", password="pass-word"))
    assert "secret-token" not in shown
    assert "pass-word" not in shown
    assert SERVER in shown


def proxy_in_env(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """``variable`` names a proxy with credentials; no other proxy variable is set."""
    monkeypatch.setenv(variable, "http://user:secret@proxy.example.invalid:3128")
    for name in ("NO_PROXY", "no_proxy", variable.lower()):
        monkeypatch.delenv(name, raising=False)


async def test_the_own_client_looks_its_proxy_up_once_and_reads_no_environment_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubernetes_asyncio's session would read ~/.netrc and the proxy variables before every request (issue #20);
    the operator's session reads nothing, with the proxy the environment named for the server at start."""
    path = single(tmp_path / "config", {"token": "abc.def"}, {})
    proxy_in_env(monkeypatch, "HTTPS_PROXY")
    api = await api_client(str(path))
    try:
        rest = api.rest_client
        assert rest.pool_manager.trust_env is False
        assert rest.proxy == "http://proxy.example.invalid:3128"
        assert rest.proxy_headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"user:secret").decode()
    finally:
        await api.close()
    monkeypatch.setenv("NO_PROXY", ".example.invalid")
    api = await api_client(str(path))
    try:
        assert not api.rest_client.proxy
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()
    named = single(tmp_path / "named", {"token": "abc.def"}, {"proxy-url": "http://named.example.invalid:8080"})
    monkeypatch.delenv("NO_PROXY")
    api = await api_client(str(named))
    try:
        assert api.rest_client.proxy == "http://named.example.invalid:8080"  # the kubeconfig's own proxy wins
    finally:
        await api.close()


async def test_proxy_credentials_reach_a_plain_http_api_server_through_the_request_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp sends proxy headers only on an HTTPS tunnel's CONNECT; a plain request carries its own."""
    path = kubeconfig(
        tmp_path / "config",
        {"me": {"token": "abc.def"}},
        {"c": {"server": "http://api.example.invalid:8080"}},
        {"ctx": ("c", "me", "team-a")},
    )
    proxy_in_env(monkeypatch, "HTTP_PROXY")
    api = await api_client(str(path))
    try:
        rest = api.rest_client
        assert rest.proxy == "http://proxy.example.invalid:3128"
        expected = "Basic " + base64.b64encode(b"user:secret").decode()
        assert rest.pool_manager.headers["Proxy-Authorization"] == expected
        assert not rest.proxy_headers
    finally:
        await api.close()


async def test_a_plain_json_body_is_sent_as_it_is_and_anything_else_as_the_client_serialises_it() -> None:
    """``JsonApiClient`` skips the generated client's per-request walk of a body that is plain JSON already, and
    sends byte for byte what the generated client would."""
    api = JsonApiClient(client.Configuration(host="https://127.0.0.1:1"))
    plain = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "n": 1.5}}
    assert api.sanitize_for_serialization(plain) is plain
    generated = client.ApiClient.sanitize_for_serialization
    when = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    model = client.V1ObjectMeta(name="x", labels={"a": "b"})
    for body in [plain, {"at": when}, {"metadata": model}, {"t": (1, 2)}, [plain], model, "text", None]:
        ours = api.sanitize_for_serialization(body)
        assert json.dumps(ours) == json.dumps(generated(api, body)), body
    assert api.sanitize_for_serialization({"at": when}) == {"at": when.isoformat()}
    await api.close()
