"""``kubectl pexp``: a kubectl plugin to look at, steer and plot PromptExperiments (docs/kubectl-pexp.md).

The command (:mod:`.cli`) does the I/O through :mod:`canopy_operator.k8s.experiments`; everything else here is
pure and reads what the cluster returns as untrusted data (:mod:`.fields`): the ``get`` tree (:mod:`.tree`),
the ``watch`` lines (:mod:`.lines`), the spec patches of the verbs (:mod:`.actions`), per-case evaluation
results (:mod:`.results`), the confidence sequence over time (:mod:`.trajectory`) drawn as a PNG
(:mod:`.raster`, :mod:`.png`, :mod:`.font`) or as text (:mod:`.termplot`).
"""
