"""The fake kubelet of the integration tests; it lives in ``canopy_devkit.kubelet`` (the demo uses it too)."""

from canopy_devkit.kubelet import RENDERED_VALUES, FakeKubelet, deployment_manifest

__all__ = ["RENDERED_VALUES", "FakeKubelet", "deployment_manifest"]
