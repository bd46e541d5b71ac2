from urbanstack.devplatform.kubernetes_build import staging_modules, wrapper_go_mod

GO_MOD = """module k8s.io/kubernetes

go 1.24.0

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0 // indirect
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
)
"""


def test_staging_modules_are_read_from_the_replace_block():
    assert staging_modules(GO_MOD) == ["k8s.io/api", "k8s.io/client-go"]


def test_wrapper_points_staging_modules_at_published_releases():
    text = wrapper_go_mod(GO_MOD, "v1.34.4")
    assert "\tk8s.io/kubernetes v1.34.4" in text
    assert "\tk8s.io/api => k8s.io/api v0.34.4" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.34.4" in text
    assert "./staging" not in text
    assert "go 1.24.0" in text
    assert "// indirect" not in text


def test_two_dev_ups_at_once_build_once_and_never_see_a_missing_binary(tmp_path, monkeypatch):
    """Two checkouts share the cache: the second `dev up` waits for the first build and uses it
    (before, both built into one folder and the second swapped it away under the first)."""
    import threading
    import time

    from urbanstack.devplatform import kubernetes_build as kb

    builds = []

    def slow_build(cache_dir, version, bindir, log_path):
        builds.append(version)
        time.sleep(0.3)
        bindir.mkdir(parents=True)
        for name in kb.BINARIES:
            (bindir / name).write_text("#!/bin/sh\n")
            (bindir / name).chmod(0o755)
        return bindir

    monkeypatch.setattr(kb, "_build_locked", slow_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(kb.build(tmp_path, "v9.9.9"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == ["v9.9.9"]
    assert results == [kb.binary_dir(tmp_path, "v9.9.9")] * 2 and kb.is_built(tmp_path, "v9.9.9")
