"""Every pinned version of an external component, in one place.

Changing a version here changes the cache key of its build, so the next
``urbanstack dev up`` builds or downloads it anew and keeps the old one.
"""

KUBERNETES = "v1.34.4"
KAFKA = "4.1.1"
KAFKA_SCALA = "2.13"
LOG4J = "2.25.3"
KEYCLOAK = "26.4.7"
# Debian bookworm's etcd-server; installed with apt-get when missing.
ETCD_DEBIAN_PACKAGE = "etcd-server"
# The Mustang project's e-invoice validator (EN 16931 + XRechnung 3.0 schematron), for the
# tests of the XRechnung export (tests/xrechnung_validator.py); from Maven Central.
MUSTANG_VALIDATOR = "2.22.0"
# The OGC conformance test suite for SensorThings (all-in-one jar; `make conformance-sta`).
STA_ETS = "org.opengis.cite:ets-sta10:1.5:jar:aio"
# The OGC API – Features conformance test suite (all-in-one jar; `make conformance-features`). The
# Maven repository these machines reach serves no version of it (1.6 to 1.9 tried on 2026-12-06):
# pass a jar built from the suite's source (mvn package) as URBANSTACK_FEATURES_ETS_JAR.
FEATURES_ETS = "org.opengis.cite:ets-ogcapi-features10:1.9:jar:aio"
