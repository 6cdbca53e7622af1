"""canopy-devkit: the dev-only kit of canopy-operator; never shipped in the operator's wheel or image.

- :mod:`canopy_devkit.simulator`: a faithful simulator of the Generation 1 Canopy backend;
- :mod:`canopy_devkit.controlplane`: etcd + kube-apiserver on loopback, without Docker (envtest for Python);
- :mod:`canopy_devkit.kubelet`: a fake kubelet that restarts the simulator when its Deployment rolls;
- :mod:`canopy_devkit.voters`: simulated users voting through the backend's HTTP API;
- :mod:`canopy_devkit.demo`: ``make demo``, the whole loop on a laptop;
- :mod:`canopy_devkit.cli`: the ``canopy-devkit simulate|up|demo`` command.

It may import only the operator's stable modules (``canopy_operator.api``, ``canopy_operator.core.export``,
``canopy_operator.sources.canopy.{client,errors,models}``); nothing in the operator imports it.
"""
