"""Test harness: every fixture starts a real service on a free loopback port and always stops it.

- tests/fixtures_services.py: the Kafka-protocol broker (Tansu), Ray Serve, the models directory.
- tests/fixtures_s3.py: the S3 server (SeaweedFS) and a fresh bucket per test.
- tests/index_support.py: one search index per backend (SQLite; Elasticsearch when configured).
- tests/ingest_support.py: a loopback web site with settable routes, and the guarded fetcher for it.
- tests/detector_support.py: the real MesoNet detectors and test faces (skipped without DEEPWATCH_MODELS_DIR).
"""

pytest_plugins = [
    "tests.fixtures_services",
    "tests.fixtures_s3",
    "tests.index_support",
    "tests.ingest_support",
    "tests.detector_support",
]
