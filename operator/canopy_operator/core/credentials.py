"""Where a credential may be sent, and which image an evaluation may run: the operator-level opt-in rules.

Every field of a PromptExperiment is input from a party the operator does not fully trust (an author may create
experiments yet not read the namespace's Secrets), so a Secret named in a spec is used as Git, forge or judge
credentials only when its owner said so, as Argo CD's repository credentials do (security-model rule 1):

- the Secret carries the label ``canopy.genaiops.io/credentials: "true"``;
- its annotation ``canopy.genaiops.io/allowed-urls`` lists URL prefixes (comma- or newline-separated), and the
  URL the credential would be sent to starts with one of them once both are normalised: scheme and host
  lower-cased, default ports dropped, no userinfo, ``git@host:path`` read as ``ssh://host/path``, a trailing
  ``/`` ignored; a prefix matches only at a path-segment boundary (``https://git.example/team`` does not match
  ``https://git.example/team-evil``), and a URL with ``.``/``..`` segments, a backslash or an encoded slash
  matches nothing;
- no credential goes over plain ``http://`` unless the operator runs with ``CANOPY_ALLOW_INSECURE_HTTP``;
- a password or token shorter than :data:`MIN_SECRET_LENGTH` characters is refused (masking it in every
  message would shred them, and it is guessable anyway).

The evaluation image is the operator's own (``CANOPY_OPERATOR_IMAGE``) or one on ``CANOPY_EVALUATION_IMAGES``
(exact, or a prefix ending in ``*``), never the spec's choice alone.

Everything here is pure: the caller reads the Secret's metadata and passes it in; a refusal is a
:class:`CredentialsRefused` whose message names the Secret, the key or the field, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

LABEL = "canopy.genaiops.io/credentials"
ALLOWED_URLS = "canopy.genaiops.io/allowed-urls"
MIN_SECRET_LENGTH = 8
INSECURE_FLAG = "CANOPY_ALLOW_INSECURE_HTTP"
IMAGES_SETTING = "CANOPY_EVALUATION_IMAGES"
OPERATOR_IMAGE_SETTING = "CANOPY_OPERATOR_IMAGE"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22}
_SCHEMES = frozenset({"http", "https", "ssh", "file"})
_SCP = re.compile(r"^(?:[^@/\s]+@)?(?P<host>\[[^\]\s]+\]|[^:/\s\[\]]+):(?P<path>.*)$")
_SHOWN = 120
"""A URL in a message is cut to this many characters."""


class CredentialsRefused(ValueError):
    """A credential may not be used for this URL; the message names the Secret and the field, never a value."""

    reason = "CredentialsNotAllowed"


@dataclass(frozen=True)
class Destination:
    """A URL a credential would be sent to, and the spec field that names it."""

    field: str
    """e.g. ``spec.delivery.git.repository``."""
    url: str


@dataclass(frozen=True)
class SecretRef:
    """Which Secret, named by which field (for messages)."""

    namespace: str
    name: str
    field: str
    """e.g. ``spec.delivery.git.credentialsSecret``."""

    def __str__(self) -> str:
        return f"Secret {self.namespace}/{self.name} ({self.field})"


def normalize_url(url: str) -> str | None:
    """``scheme://host[:port]/path`` for matching (see the module doc), or None for a URL that matches nothing."""
    text = url.strip()
    scp = _SCP.match(text)
    if scp and "://" not in text:
        path = scp.group("path")
        text = f"ssh://{scp.group('host')}/{path.lstrip('/')}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or parts.fragment or "\\" in text:
        return None
    host = (parts.hostname or "").lower()
    if scheme != "file" and not host:
        return None
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    path = parts.path
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered or any(seg in (".", "..") for seg in unquote(path).split("/")):
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path.rstrip('/')}{query}"


def allowed_prefixes(annotation: str) -> tuple[str, ...]:
    """The prefixes an ``allowed-urls`` annotation lists (comma- or newline-separated; unusable ones dropped)."""
    items = (item.strip() for item in annotation.replace("\n", ",").split(","))
    normal = (normalize_url(item) for item in items if item)
    return tuple(item for item in normal if item is not None and "?" not in item)


def url_allowed(url: str, prefixes: Iterable[str]) -> bool:
    """Whether ``url`` starts with one of the (normalised) ``prefixes`` at a path-segment boundary."""
    target = normalize_url(url)
    if target is None:
        return False
    return any(target == prefix or target.startswith((prefix + "/", prefix + "?")) for prefix in prefixes)


def shown(url: str) -> str:
    """A URL fit for a message: no userinfo, no query, at most a hundred-odd characters."""
    normal = normalize_url(url)
    text = (normal or url).split("?", 1)[0]
    if normal is None and "@" in text:
        text = text.rsplit("@", 1)[-1]
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def check_opt_in(
    ref: SecretRef,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    destinations: Sequence[Destination],
    *,
    allow_insecure_http: bool,
) -> None:
    """Refuse (``CredentialsRefused``) unless the Secret opted in for every destination."""
    if labels.get(LABEL, "").strip().lower() != "true":
        raise CredentialsRefused(
            f"{ref} is not labelled {LABEL}=true, so it may not be used as credentials; its owner adds the "
            f"label and the {ALLOWED_URLS} annotation to allow it"
        )
    prefixes = allowed_prefixes(annotations.get(ALLOWED_URLS, ""))
    if not prefixes:
        raise CredentialsRefused(f"{ref} has no {ALLOWED_URLS} annotation listing the URLs it may be sent to")
    for dest in destinations:
        if not url_allowed(dest.url, prefixes):
            raise CredentialsRefused(
                f"{ref} may not be sent to {shown(dest.url)} ({dest.field}): no prefix in its {ALLOWED_URLS} "
                "annotation allows it"
            )
        if (normalize_url(dest.url) or "").startswith("http://") and not allow_insecure_http:
            raise CredentialsRefused(
                f"{ref} would be sent over plain http:// to {shown(dest.url)} ({dest.field}); use https, or start "
                f"the operator with {INSECURE_FLAG}=true"
            )


def check_length(ref: SecretRef, key: str, value: str) -> None:
    """Refuse a password or token shorter than :data:`MIN_SECRET_LENGTH` characters (names the key only)."""
    if len(value) < MIN_SECRET_LENGTH:
        raise CredentialsRefused(
            f"{ref}: key {key} is shorter than {MIN_SECRET_LENGTH} characters; use a real password or token"
        )


# -- the evaluation image ---------------------------------------------------------------------------------
def image_allowed(image: str, operator_image: str | None, allowed: Sequence[str]) -> bool:
    """The operator's own image, or one on the allow-list (exact, or a prefix given with a trailing ``*``; a bare
    ``*`` allows nothing: it would leave the choice to the spec)."""
    if operator_image and image == operator_image:
        return True
    for pattern in (p.strip() for p in allowed):
        if pattern.endswith("*") and len(pattern) > 1 and image.startswith(pattern[:-1]):
            return True
        if pattern and image == pattern:
            return True
    return False


def image_refusal(image: str | None, operator_image: str | None, allowed: Sequence[str]) -> str | None:
    """Why ``image`` (``spec.evaluation.image``; None: the operator's own) may not run, or None when it may."""
    if image is None:
        if operator_image:
            return None
        return f"set {OPERATOR_IMAGE_SETTING} on the operator (or spec.evaluation.image on its allow-list)"
    if image_allowed(image, operator_image, allowed):
        return None
    cut = image if len(image) <= _SHOWN else image[: _SHOWN - 3] + "..."
    return f"spec.evaluation.image {cut} is neither the operator's own image nor on its allow-list ({IMAGES_SETTING})"
