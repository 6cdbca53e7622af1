"""Every setting of the operator process, read from the environment here and nowhere else.

The Deployment sets them (``manifests/base/deployment.yaml``); ``canopy-operator run`` flags override the
ones it has. Read once, at start-up: a changed variable takes effect at the next start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from canopy_operator.core.leader import Timing
from canopy_operator.core.notify import url_problem
from canopy_operator.failpoints import DIR_ENV, ENV, Failpoints

MAX_BACKEND_BODY_ENV = "CANOPY_MAX_BACKEND_BODY"
MAX_BACKEND_LOG_BODY_ENV = "CANOPY_MAX_BACKEND_LOG_BODY"
DELETE_ATTEMPTS_ENV = "CANOPY_DELETE_ATTEMPTS"
GIT_CACHE_ENV = "CANOPY_GIT_CACHE_DIR"
IMAGE_ENV = "CANOPY_OPERATOR_IMAGE"
LIVENESS_ENV = "CANOPY_LIVENESS"
METRICS_PORT_ENV = "CANOPY_METRICS_PORT"
METRICS_ADDR_ENV = "CANOPY_METRICS_ADDR"
LOG_LEVEL_ENV = "CANOPY_LOG_LEVEL"
KUBECONFIG_ENV = "KUBECONFIG"
ALLOW_INSECURE_HTTP_ENV = "CANOPY_ALLOW_INSECURE_HTTP"
ALLOW_FILE_REPOSITORIES_ENV = "CANOPY_ALLOW_FILE_REPOSITORIES"
BACKEND_HOSTS_ENV = "CANOPY_BACKEND_HOSTS"
EVALUATION_IMAGES_ENV = "CANOPY_EVALUATION_IMAGES"
NOTIFY_WEBHOOK_URL_ENV = "CANOPY_NOTIFY_WEBHOOK_URL"
LEADER_ELECTION_ENV = "CANOPY_LEADER_ELECTION"
LEADER_ELECTION_NAMESPACE_ENV = "CANOPY_LEADER_ELECTION_NAMESPACE"
LEADER_ELECTION_LEASE_ENV = "CANOPY_LEADER_ELECTION_LEASE"
LEASE_DURATION_ENV = "CANOPY_LEADER_ELECTION_LEASE_DURATION"
RENEW_DEADLINE_ENV = "CANOPY_LEADER_ELECTION_RENEW_DEADLINE"
RETRY_PERIOD_ENV = "CANOPY_LEADER_ELECTION_RETRY_PERIOD"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
DEFAULT_LEASE_NAME = "canopy-operator"
DEFAULT_MAX_BACKEND_BODY = 32 * 1024 * 1024
DEFAULT_MAX_BACKEND_LOG_BODY = 160 * 1024 * 1024


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={raw!r} is not true or false")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").replace("\n", ",").split(",") if item.strip())


class SettingsError(ValueError):
    """A variable holds a value the operator cannot use; the message names it."""


def _webhook(env: Mapping[str, str], name: str, allow_insecure_http: bool) -> str | None:
    """A webhook URL, checked like a Secret's (never repeated in the error: it is a secret)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    problem = url_problem(raw, allow_insecure_http=allow_insecure_http)
    if problem is not None:
        raise SettingsError(f"{name} {problem}")
    return raw


def _leader_timing(env: Mapping[str, str]) -> Timing:
    """The leader-election timing (whole seconds, client-go's defaults), refused when a lost leader could still
    act while another one takes over."""
    timing = Timing(
        lease_duration=_int(env, LEASE_DURATION_ENV, Timing.lease_duration, 1),
        renew_deadline=_int(env, RENEW_DEADLINE_ENV, Timing.renew_deadline, 1),
        retry=_int(env, RETRY_PERIOD_ENV, Timing.retry, 1),
    )
    problem = timing.problem()
    if problem is not None:
        raise SettingsError(f"{LEASE_DURATION_ENV}, {RENEW_DEADLINE_ENV}, {RETRY_PERIOD_ENV}: {problem}")
    return timing


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    """The operator process's settings."""

    max_backend_body: int = DEFAULT_MAX_BACKEND_BODY
    """Largest backend answer read, in bytes (``CANOPY_MAX_BACKEND_BODY``)."""
    max_backend_log_body: int = DEFAULT_MAX_BACKEND_LOG_BODY
    """Largest ``GET /feedback/ab`` or ``GET /feedback`` answer read, in bytes (``CANOPY_MAX_BACKEND_LOG_BODY``):
    streamed, about its size in memory while a poll runs; 160 MiB holds 100 000 votes at the contract's text
    sizes (124 MiB, bench/RESULTS-collect.md)."""
    delete_attempts: int = 3
    """How many times the restore on deletion is tried before the object is released (``CANOPY_DELETE_ATTEMPTS``)."""
    git_cache_dir: str | None = None
    """Where Git clones are cached (``CANOPY_GIT_CACHE_DIR``); None: a temporary directory removed at exit."""
    operator_image: str | None = None
    """The operator's own image, the evaluation Jobs' default (``CANOPY_OPERATOR_IMAGE``)."""
    liveness: str = ""
    """Kopf's liveness endpoint, e.g. ``http://0.0.0.0:8080/healthz`` (``CANOPY_LIVENESS``)."""
    metrics_port: int = 0
    """Port of the Prometheus endpoint, 0 for none (``CANOPY_METRICS_PORT``)."""
    metrics_addr: str = "0.0.0.0"  # noqa: S104 - a pod serves its metrics on every interface
    """Address the Prometheus endpoint binds (``CANOPY_METRICS_ADDR``)."""
    log_level: str = "INFO"
    """``CANOPY_LOG_LEVEL``."""
    kubeconfig: str | None = None
    """``KUBECONFIG`` at start-up (outside a cluster)."""
    failpoints: str = ""
    """``CANOPY_FAILPOINTS``: test-only kill and pause points (empty in production)."""
    failpoint_dir: str | None = None
    """``CANOPY_FAILPOINT_DIR``: where a paused failpoint leaves its marker file."""
    allow_insecure_http: bool = False
    """``CANOPY_ALLOW_INSECURE_HTTP``: credentials may be sent over plain ``http://`` (off: refused)."""
    allow_file_repositories: bool = False
    """``CANOPY_ALLOW_FILE_REPOSITORIES``: ``file://`` Git repositories are allowed (tests only)."""
    backend_hosts: tuple[str, ...] = ()
    """``CANOPY_BACKEND_HOSTS``: hosts (``host`` or ``host:port``, ``*.`` wildcards) a ``spec.backend.url`` may
    name besides a Service in the experiment's own namespace (comma-separated)."""
    evaluation_images: tuple[str, ...] = ()
    """``CANOPY_EVALUATION_IMAGES``: images an evaluation Job may run besides the operator's own (comma-separated;
    a trailing ``*`` allows a prefix)."""
    notify_webhook_url: str | None = field(default=None, repr=False)
    """``CANOPY_NOTIFY_WEBHOOK_URL``: the operator-wide notification webhook (trusted: set by the installer),
    used for experiments whose ``spec.notifications.webhookSecret`` is unset; https only unless
    ``CANOPY_ALLOW_INSECURE_HTTP``. A secret: never shown (docs/notifications.md)."""
    leader_election: bool = False
    """``CANOPY_LEADER_ELECTION``: replicas elect a leader through a Lease and only it acts; the others wait
    (docs/high-availability.md). Off: the process acts at once, alone (``make run``, one replica)."""
    leader_election_namespace: str | None = None
    """``CANOPY_LEADER_ELECTION_NAMESPACE``, else ``POD_NAMESPACE``: where the Lease is; None: the service
    account's namespace, else the kubeconfig context's, else ``default``."""
    leader_election_lease: str = DEFAULT_LEASE_NAME
    """``CANOPY_LEADER_ELECTION_LEASE``: the Lease's name."""
    leader_timing: Timing = field(default_factory=Timing)
    """``CANOPY_LEADER_ELECTION_LEASE_DURATION`` (15), ``_RENEW_DEADLINE`` (10), ``_RETRY_PERIOD`` (2), seconds."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment holds (``os.environ`` unless given)."""
        env = os.environ if env is None else env
        return cls(
            max_backend_body=_int(env, MAX_BACKEND_BODY_ENV, DEFAULT_MAX_BACKEND_BODY, 1024),
            max_backend_log_body=_int(env, MAX_BACKEND_LOG_BODY_ENV, DEFAULT_MAX_BACKEND_LOG_BODY, 1024),
            delete_attempts=_int(env, DELETE_ATTEMPTS_ENV, 3, 1),
            git_cache_dir=env.get(GIT_CACHE_ENV) or None,
            operator_image=env.get(IMAGE_ENV) or None,
            liveness=env.get(LIVENESS_ENV, ""),
            metrics_port=_int(env, METRICS_PORT_ENV, 0, 0),
            metrics_addr=env.get(METRICS_ADDR_ENV) or "0.0.0.0",  # noqa: S104 - see the field
            log_level=env.get(LOG_LEVEL_ENV) or "INFO",
            kubeconfig=env.get(KUBECONFIG_ENV) or None,
            failpoints=env.get(ENV, ""),
            failpoint_dir=env.get(DIR_ENV) or None,
            allow_insecure_http=_flag(env, ALLOW_INSECURE_HTTP_ENV),
            allow_file_repositories=_flag(env, ALLOW_FILE_REPOSITORIES_ENV),
            backend_hosts=_list(env, BACKEND_HOSTS_ENV),
            evaluation_images=_list(env, EVALUATION_IMAGES_ENV),
            notify_webhook_url=_webhook(env, NOTIFY_WEBHOOK_URL_ENV, _flag(env, ALLOW_INSECURE_HTTP_ENV)),
            leader_election=_flag(env, LEADER_ELECTION_ENV),
            leader_election_namespace=(
                env.get(LEADER_ELECTION_NAMESPACE_ENV, "").strip() or env.get(POD_NAMESPACE_ENV, "").strip() or None
            ),
            leader_election_lease=env.get(LEADER_ELECTION_LEASE_ENV, "").strip() or DEFAULT_LEASE_NAME,
            leader_timing=_leader_timing(env),
        )

    def make_failpoints(self) -> Failpoints:
        """The process's failpoints (none unless ``CANOPY_FAILPOINTS`` names some)."""
        return Failpoints.from_text(self.failpoints, self.failpoint_dir)
