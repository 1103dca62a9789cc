"""Kafka's own Java console producer, from the broker's jars: records as deployments write them."""

from __future__ import annotations

import subprocess

from scripts.localkafka import fetch

__all__ = ["java_produce"]


def java_produce(bootstrap: str, topic: str, codec: str, lines: list[tuple[str, str]]) -> None:
    """Send ``(key, value)`` lines with ``compression.type=codec`` and wait for the broker."""
    libs = fetch()
    text = "".join(f"{key}\t{value}\n" for key, value in lines)
    subprocess.run(
        [
            "java",
            "-cp",
            f"{libs}/*",
            "kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--compression-codec",
            codec,
            "--producer-property",
            "acks=all",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=\t",
        ],
        input=text.encode(),
        check=True,
        timeout=120,
        capture_output=True,
    )
