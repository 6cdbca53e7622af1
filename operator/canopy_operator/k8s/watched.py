"""Reads of an experiment's ConfigMap and Deployment that come from watches while nothing changed.

Decision (issue #20, "nothing read while idle"; also in docs/architecture.md, "Reads while idle")
----------------------------------------------------------------------------------------------------
An idle Running experiment read its ConfigMap every pass (120 GETs per experiment per hour at the default
30 s) only to find it unchanged. Now:

1. **Kopf indexes the resourceVersion, never the body.** ``handlers/experiment.py`` registers two Kopf
   indexes, ``configmap_versions`` and ``deployment_versions``: ``(namespace, name) -> resourceVersion`` of
   every ConfigMap and Deployment in the namespaces the operator serves. They ride on Kopf's own watches, so
   they follow the install mode (``--namespace`` for the namespaced install, ``--all-namespaces`` for the
   cluster-wide one), reconnect and re-list as Kopf does, and are complete before any daemon starts. What is
   held per object is one short string; no ConfigMap body of anyone else's is kept.
   The Deployment index holds a little more: the rollout fields (generation, observed generation, replica
   counts, resourceVersion; never the pod template), so waiting for a rollout reads nothing either. After the
   experiment's own roll, that view is used only once it shows the roll's generation (until then the watch
   would show the old, finished rollout, and old pods would be taken for new ones): meanwhile the rollout
   counts as pending, without a read (the controller cannot have finished a roll the watch has not delivered).
2. **Each experiment keeps its own last read** (:class:`WatchedReads`, one per daemon): at most one
   ConfigMap and one Deployment, the ones its spec names. A read returns the kept object when the index holds
   the very resourceVersion it was read at, and otherwise (changed, deleted, not yet seen, or two objects
   under one key) reads it from the API server as before and keeps that. So an edit by hand (drift) is seen
   at the next pass exactly as before, one GET later; an idle experiment makes no GET at all.
3. **Writes go to the API server as before**, with the same resourceVersion preconditions. A conflicting
   write forgets the kept object, so the retry reads it anew. A ConfigMap write that succeeded keeps what it
   made (the object read, with the key set, at the version the write returned): the read after it is served
   while the watch shows that very version or the one the write replaced (the watch has not delivered the
   write yet, and shows nothing newer), and is a GET once the watch shows any other version.

Why not the alternatives:

- *Index the bodies (or the parsed values) of the ConfigMaps experiments reference.* A Kopf index sees each
  object when it changes, not when an experiment starts referencing it: an unchanged ConfigMap listed before
  its experiment appeared would never be indexed, and the experiment would GET it forever. Indexing every
  body is what the issue forbids (unbounded memory, other tenants' data in the operator's heap).
- *A watch scoped by a label the operator sets on what it manages.* It writes to objects the operator does
  not own (in Argo CD/GitOps mode Argo owns the ConfigMap, and a label Argo does not know is a diff or is
  removed on sync), and needs a first GET-and-label per object anyway.
- *One watch per experiment* (``fieldSelector=metadata.name=...``): one long-lived API connection per
  experiment and kind instead of one per kind.

Costs: the operator's RBAC gains ``list`` and ``watch`` on ConfigMaps and Deployments (never on Secrets), in
the namespaces it serves; Kopf streams those kinds' events and keeps a small record per object (its own
per-object memory plus one resourceVersion string in the index), so memory grows with the number of
ConfigMaps and Deployments served, not with their size. The namespaced install bounds that to its namespaces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Literal, NamedTuple

from canopy_operator.k8s.gateway import ConfigMapView, Gateway
from canopy_operator.k8s.rollout import RolloutView

Kind = Literal["ConfigMap", "Deployment"]
Versions = Callable[[Kind, str, str], str | None]
"""The resourceVersion the watch last saw of ``kind`` ``namespace/name``, or None (not seen, gone, ambiguous)."""
Rollouts = Callable[[str, str], RolloutView | None]
"""The rollout fields the watch last saw of Deployment ``namespace/name``, or None (not seen, gone, ambiguous)."""


class _Roll(NamedTuple):
    """This experiment's last roll: the Deployment, the generation the roll made, the annotation it set, and the
    Deployment's uid as the watch showed it then ("" when it showed none)."""

    namespace: str
    name: str
    generation: int
    key: str
    value: str
    uid: str


def unwatched(kind: Kind, namespace: str, name: str) -> str | None:
    """No watch: every read goes to the API server."""
    return None


def no_rollouts(namespace: str, name: str) -> RolloutView | None:
    """No watch of the Deployments' rollout fields: rollout reads go by resourceVersion (or to the API server)."""
    return None


class WatchedReads:
    """The ConfigMap and Deployment calls of ConfigMap delivery, for one experiment, reads served from its
    last read while the watch says the object has not changed since (module docstring)."""

    def __init__(self, gateway: Gateway, versions: Versions = unwatched, rollouts: Rollouts = no_rollouts) -> None:
        self.gateway = gateway
        self.versions = versions
        self.rollouts = rollouts
        self._rolled: _Roll | None = None
        """This experiment's last roll: a watched rollout older than it (the watch has not delivered the roll yet)
        would show the old, finished rollout, so it is not used."""
        self._configmap: ConfigMapView | None = None
        self._replaced: str | None = None
        """The resourceVersion the write that made the kept ConfigMap replaced (its precondition)."""
        self._rollout: tuple[str, RolloutView] | None = None  # (namespace, view)
        self.gets = 0
        """API reads made (for tests and logs); reads served from the kept object are not counted."""

    async def get_configmap(self, namespace: str, name: str) -> ConfigMapView:
        kept = self._configmap
        same = kept is not None and (kept.namespace, kept.name) == (namespace, name)
        seen = self.versions("ConfigMap", namespace, name)
        if same and kept is not None and seen is not None and seen in (kept.resource_version, self._replaced):
            # The watch shows the kept version, or the one this experiment's own write replaced (it has not
            # delivered that write yet; one GET per start under load, issue #20): either way nothing newer is seen.
            return kept
        self._configmap = None
        self._replaced = None
        self.gets += 1
        view = await self.gateway.get_configmap(namespace, name)  # NotFound propagates; nothing is kept then
        self._configmap = view
        return view

    async def write_configmap_key(
        self, view: ConfigMapView, key: str, text: str, *, annotations: Mapping[str, str | None] | None = None
    ) -> str:
        self._configmap = None
        self._replaced = None
        # a Conflict keeps nothing
        version = await self.gateway.write_configmap_key(view, key, text, annotations=annotations)
        self._replaced = view.resource_version
        # The write had ``view``'s resourceVersion as precondition, so the object it made is ``view`` with the
        # key (and annotations) set, at ``version``: kept as read, served while the watch shows that version or
        # the one it replaced.
        kept = {**view.annotations, **(annotations or {})}
        notes = {k: v for k, v in kept.items() if v is not None}
        self._configmap = replace(view, data={**view.data, key: text}, annotations=notes, resource_version=version)
        return version

    async def get_rollout(self, namespace: str, name: str) -> RolloutView:
        seen = self.rollouts(namespace, name)
        rolled = self._rolled
        if seen is not None:
            if rolled is None or rolled[:2] != (namespace, name) or seen.generation >= rolled.generation:
                return seen  # the watch's view, at least as new as this experiment's own roll: no read at all
            # The watch has not delivered this experiment's own roll yet, so the controller cannot have finished
            # it either: pending, without a read (the watch wakes the daemon when the roll shows).
            observed = min(seen.observed_generation or 0, rolled.generation - 1)
            return replace(seen, generation=rolled.generation, observed_generation=observed)
        kept = self._rollout
        same = kept is not None and (kept[0], kept[1].name) == (namespace, name)
        if same and kept is not None and self.versions("Deployment", namespace, name) == kept[1].resource_version:
            return kept[1]
        self._rollout = None
        self.gets += 1
        view = await self.gateway.get_rollout(namespace, name)
        self._rollout = (namespace, view)
        return view

    async def get_pod_template_annotation(self, namespace: str, name: str, key: str) -> str | None:
        """Read before a roll (a write): from the API server, unless the watch shows the Deployment at exactly
        the generation this experiment's own roll made. A pod template change moves the generation, so the
        template is then the one that roll wrote, annotation included (the check a pass makes on every look at
        a rollout it started: one Deployment read fewer per start, issue #20)."""
        rolled = self._rolled
        if rolled is not None and rolled[:2] == (namespace, name) and rolled.key == key:
            seen = self.rollouts(namespace, name)
            if seen is not None and seen.generation == rolled.generation and seen.uid and seen.uid == rolled.uid:
                return rolled.value
        return await self.gateway.get_pod_template_annotation(namespace, name, key)

    async def set_pod_template_annotation(self, namespace: str, name: str, key: str, value: str) -> int:
        self._rollout = None
        self._rolled = None
        before = self.rollouts(namespace, name)
        generation = await self.gateway.set_pod_template_annotation(namespace, name, key, value)
        self._rolled = _Roll(namespace, name, generation, key, value, before.uid if before is not None else "")
        return generation

    def forget(self) -> None:
        """Drop what is kept (the next reads go to the API server)."""
        self._configmap = None
        self._replaced = None
        self._rollout = None
        self._rolled = None
