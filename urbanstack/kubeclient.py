"""Kubernetes API clients for the platform's own identities."""

from __future__ import annotations

import os

import kubernetes


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def api_client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    """A client from ``kubeconfig``, or from the pod's service account when None."""
    if kubeconfig is None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=configuration)
        return kubernetes.client.ApiClient(configuration)
    return kubernetes.config.new_client_from_config(config_file=kubeconfig)
