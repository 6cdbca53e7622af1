"""The Kopf-free imperative shell: settings, the services an operator process holds, one reconcile pass."""
