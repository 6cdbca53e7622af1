"""A minimal synchronous REST client for the local control plane (readiness checks, CRDs, fixtures)."""

from __future__ import annotations

import ssl
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


class ApiError(RuntimeError):
    """The API server answered with an unexpected status."""

    def __init__(self, method: str, path: str, response: httpx.Response) -> None:
        super().__init__(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        self.status_code = response.status_code


def _collection_path(obj: dict[str, Any], plural: str) -> str:
    api_version: str = obj["apiVersion"]
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    namespace = obj["metadata"].get("namespace")
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


class RestClient:
    """Talks to one API server as the user of one client certificate."""

    def __init__(self, server: str, ca_file: Path, cert_file: Path, key_file: Path, timeout: float = 10.0) -> None:
        context = ssl.create_default_context(cafile=str(ca_file))
        context.load_cert_chain(str(cert_file), str(key_file))
        self._client = httpx.Client(base_url=server, verify=context, timeout=timeout, trust_env=False)

    def __enter__(self) -> RestClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """Send one request; transport errors propagate as ``httpx.TransportError``."""
        return self._client.request(method, path, json=body)

    def status(self, path: str) -> int:
        """The status code of a GET, 0 when the server cannot be reached."""
        try:
            return self._client.get(path).status_code
        except httpx.TransportError:
            return 0

    def get_json(self, path: str) -> dict[str, Any]:
        response = self.request("GET", path)
        if response.status_code != httpx.codes.OK:
            raise ApiError("GET", path, response)
        data: dict[str, Any] = response.json()
        return data

    def create_or_replace(self, obj: dict[str, Any], plural: str) -> dict[str, Any]:
        """Create ``obj``; when it exists, replace it (carrying over its resourceVersion)."""
        collection = _collection_path(obj, plural)
        response = self.request("POST", collection, obj)
        if response.status_code == httpx.codes.CONFLICT:
            item = f"{collection}/{obj['metadata']['name']}"
            current = self.get_json(item)
            replacement = {
                **obj,
                "metadata": {**obj["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
            }
            response = self.request("PUT", item, replacement)
        if response.status_code not in (httpx.codes.OK, httpx.codes.CREATED):
            raise ApiError("POST/PUT", collection, response)
        result: dict[str, Any] = response.json()
        return result

    def delete(self, path: str) -> int:
        """DELETE ``path``; returns the status code (404 is not an error here)."""
        response = self.request("DELETE", path)
        if response.status_code not in (httpx.codes.OK, httpx.codes.ACCEPTED, httpx.codes.NOT_FOUND):
            raise ApiError("DELETE", path, response)
        return response.status_code
