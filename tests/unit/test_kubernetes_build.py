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
