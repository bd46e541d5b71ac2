"""The Pulumi program that installs Urban Stack on a Kubernetes cluster.

``__main__.py`` is only the entry point the Pulumi CLI runs; everything it
declares comes from these modules, so unit tests can run the same program under
Pulumi's mocks (``tests/unit/stacks``). ``docs/deploy.md`` is the walk-through.
"""
