"""Which repositories and values files the operator's Git touches (security-model rule 2), as checks that
raise the domain error naming the spec field.

- The repository is an ``https://``, ``http://`` or ``ssh://`` URL, or ``user@host:path``. ``file://`` only when
  the operator allows it (``CANOPY_ALLOW_FILE_REPOSITORIES``, tests only), and never a path inside the
  operator's own clone cache, which holds other namespaces' clones. A local path, another transport or an
  argument-like URL is refused (``GitRepositoryNotAllowed``).
- The values file is a plain relative path inside the repository (no ``..``, ``.``, empty segment, leading
  ``/`` or backslash): ``InvalidValues`` otherwise. That it is no symbolic link is checked where the clone is
  (``gitops.repo``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from canopy_operator.core.redact import Redactor
from canopy_operator.gitops.disk import NAMESPACE
from canopy_operator.gitops.errors import GitRepositoryNotAllowed, GitValuesError, brief

REPOSITORY_FIELD = "spec.delivery.git.repository"
VALUES_FIELD = "spec.delivery.git.valuesFile"
FILE_FLAG = "CANOPY_ALLOW_FILE_REPOSITORIES"
_SCP = re.compile(r"^[^@/\s]+@[^:/\s]+:\S")


@dataclass(frozen=True)
class GitPolicy:
    """What the operator lets Git do (``Settings``): ``file://`` repositories, credentials over plain HTTP."""

    allow_file_repositories: bool = False
    allow_insecure_http: bool = False


def check_repository(repository: str, namespace: str, policy: GitPolicy, cache_dir: Path) -> None:
    """Refuse (``GitRepositoryNotAllowed``) a repository the operator does not clone for ``namespace``."""
    shown = brief(Redactor()(repository), 120)
    if not NAMESPACE.match(namespace):
        raise GitRepositoryNotAllowed(f"no namespace for the clone of {shown}")
    if repository.startswith("-"):
        raise GitRepositoryNotAllowed(f"{REPOSITORY_FIELD} {shown} is not a repository URL")
    if "://" not in repository:
        if _SCP.match(repository):
            return
        raise GitRepositoryNotAllowed(
            f"{REPOSITORY_FIELD} {shown} is neither an https://, http:// or ssh:// URL nor user@host:path"
        )
    scheme = repository.split("://", 1)[0].lower()
    if scheme in ("https", "http", "ssh"):
        return
    if scheme != "file":
        raise GitRepositoryNotAllowed(f"{REPOSITORY_FIELD} {shown}: the operator does not clone {scheme}:// URLs")
    if not policy.allow_file_repositories:
        raise GitRepositoryNotAllowed(
            f"{REPOSITORY_FIELD} {shown}: file:// repositories are off (the operator allows them only with "
            f"{FILE_FLAG}=true, for tests)"
        )
    parts = urlsplit(repository)
    local = Path(unquote(parts.path)).resolve()
    cache = cache_dir.resolve()
    if parts.netloc not in ("", "localhost") or local == cache or local.is_relative_to(cache):
        raise GitRepositoryNotAllowed(f"{REPOSITORY_FIELD} {shown} names the operator's own clone cache")


def values_path_in_repo(values_file: str) -> str:
    """``values_file`` as a plain relative path, or ``GitValuesError`` for one that would leave the repository."""
    parts = values_file.split("/")
    if values_file.startswith("/") or "\\" in values_file or any(p in ("", ".", "..") for p in parts):
        raise GitValuesError(f"{values_file} points outside the repository (or is not a plain relative path)")
    return values_file


def sparse_pattern(values_file: str) -> str:
    """The sparse-checkout pattern matching exactly ``values_file`` (gitignore syntax, specials escaped)."""
    escaped = re.sub(r"([\\*?\[\]!#])", r"\\\1", values_path_in_repo(values_file))
    return "/" + escaped
