"""The local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager.

There is no kubelet and no scheduler: objects are stored, validated, admitted,
garbage-collected and namespaces finish deleting, but pods stay Pending.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from urbanstack import versions
from urbanstack.devplatform import debian, kubernetes_build, pki, secrets
from urbanstack.devplatform.service import Service, http_ok

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"

# Static tokens: the platform admin, the controller manager, the operator, the data plane and the Gov Hub.
# The operator gets no group: its rights come only from its ClusterRole (least privilege).
TOKEN_USERS = {
    "admin": ("admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "operator": ("urbanstack-operator", ""),
    "runtime": ("urbanstack-runtime", ""),
    "govhub": ("urbanstack-gov-hub", ""),
    "signup": ("urbanstack-signup", ""),
}


def _kube_dir(settings) -> Path:
    return settings.state_dir / "kube"


def token(settings, who: str) -> str:
    return secrets.get_or_create(settings.secrets_dir, f"kube-token-{who}")


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, bearer: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "urbanstack-dev", "cluster": {"server": server,
                                                             "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": bearer}}],
        "contexts": [{"name": "urbanstack-dev", "context": {"cluster": "urbanstack-dev", "user": user}}],
        "current-context": "urbanstack-dev",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle)


class Etcd(Service):
    name = "etcd"

    def install(self) -> None:
        debian.ensure_installed(versions.ETCD_DEBIAN_PACKAGE, provides="etcd", what="etcd")

    def command(self):
        s = self.settings
        peer = f"http://127.0.0.1:{s.etcd_port + 10}"
        return [
            shutil.which("etcd") or "etcd", "--name", "urbanstack",
            "--data-dir", str(s.state_dir / "etcd"),
            "--listen-client-urls", s.etcd_url, "--advertise-client-urls", s.etcd_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"urbanstack={peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{s.etcd_port + 20}",
            "--quota-backend-bytes", str(2 * 1024**3),
        ], dict(os.environ)

    def ready(self) -> bool:
        return http_ok(f"{self.settings.etcd_url}/health")

    def endpoint(self) -> str:
        return self.settings.etcd_url


class ApiServer(Service):
    name = "kube-apiserver"
    depends_on = ("etcd",)

    def install(self) -> None:
        kubernetes_build.build(self.settings.cache_dir)

    def _token_file(self) -> str:
        lines = []
        for who, (user, group) in TOKEN_USERS.items():
            entry = f'{token(self.settings, who)},{user},{user}'
            lines.append(entry + (f',"{group}"' if group else ""))
        return "\n".join(lines) + "\n"

    def needs_restart(self) -> bool:
        """The API server reads its token file only at start: a new identity needs a restart."""
        tokens = _kube_dir(self.settings) / "tokens.csv"
        return not tokens.exists() or tokens.read_text() != self._token_file()

    def prepare(self) -> None:
        s = self.settings
        kube = _kube_dir(s)
        pki.ensure(kube / "pki")
        tokens = kube / "tokens.csv"
        tokens.write_text(self._token_file())
        tokens.chmod(0o600)
        write_kubeconfig(s.kubeconfig, s.apiserver_url, kube / "pki" / "ca.crt", "admin", token(s, "admin"))
        write_kubeconfig(kube / "controller-manager.kubeconfig", s.apiserver_url, kube / "pki" / "ca.crt",
                         "system:kube-controller-manager", token(s, "controller-manager"))
        write_kubeconfig(kube / "operator.kubeconfig", s.apiserver_url, kube / "pki" / "ca.crt",
                         "urbanstack-operator", token(s, "operator"))
        write_kubeconfig(kube / "runtime.kubeconfig", s.apiserver_url, kube / "pki" / "ca.crt",
                         "urbanstack-runtime", token(s, "runtime"))
        write_kubeconfig(kube / "govhub.kubeconfig", s.apiserver_url, kube / "pki" / "ca.crt",
                         "urbanstack-gov-hub", token(s, "govhub"))
        write_kubeconfig(kube / "signup.kubeconfig", s.apiserver_url, kube / "pki" / "ca.crt",
                         "urbanstack-signup", token(s, "signup"))

    def command(self):
        s = self.settings
        kube = _kube_dir(s)
        p = kube / "pki"
        binary = kubernetes_build.binary_dir(s.cache_dir) / "kube-apiserver"
        return [
            str(binary),
            f"--etcd-servers={s.etcd_url}",
            "--etcd-prefix=/urbanstack-registry",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={s.apiserver_port}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--token-auth-file={kube / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--allow-privileged=false",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            f"--cert-dir={kube / 'certs'}",
            "--event-ttl=1h",
        ], dict(os.environ)

    def ready(self) -> bool:
        s = self.settings
        return http_ok(f"{s.apiserver_url}/readyz", token=token(s, "admin"),
                       cafile=str(_kube_dir(s) / "pki" / "ca.crt"))

    def endpoint(self) -> str:
        return f"{self.settings.apiserver_url} (kubeconfig {self.settings.kubeconfig})"


class ControllerManager(Service):
    name = "kube-controller-manager"
    depends_on = ("kube-apiserver",)

    def install(self) -> None:
        kubernetes_build.build(self.settings.cache_dir)

    def command(self):
        s = self.settings
        kube = _kube_dir(s)
        p = kube / "pki"
        binary = kubernetes_build.binary_dir(s.cache_dir) / "kube-controller-manager"
        kubeconfig = kube / "controller-manager.kubeconfig"
        return [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={s.controller_manager_port}",
            f"--cert-dir={kube / 'certs-kcm'}",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--leader-elect=false",
            "--profiling=false",
            "--concurrent-namespace-syncs=4",
        ], dict(os.environ)

    def ready(self) -> bool:
        return http_ok(f"https://127.0.0.1:{self.settings.controller_manager_port}/healthz", insecure=True)

    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.settings.controller_manager_port}/healthz"
