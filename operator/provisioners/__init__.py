"""One provisioner per backend, each with the same four idempotent verbs:
observe, apply, delete (and ``name``/``condition`` for status)."""
