"""Evaluations of an experiment, pure: Jobs rendered (``jobs``), read back (``results``), when to start
one (``trigger``) and the promotion gate (``gate``)."""
