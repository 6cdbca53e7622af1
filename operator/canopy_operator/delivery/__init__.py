"""The "act on config" port (``base``) and its adapters: a ConfigMap plus a rollout, or a Git repository."""
