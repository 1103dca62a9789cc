"""The naive design (``python -m bench.naive``): the reference tutorial's loop, in Faust.

One record at a time (``async for value in stream``), scikit-learn ``predict``
on the joblib estimator per record, ``await topic.send(...)`` per record. This
is the design hotswap replaces; hotswap / naive says what batching and ONNX buy.
"""

from __future__ import annotations

import argparse
import sys

import faust
import joblib
import orjson

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--data-topic", required=True)
    parser.add_argument("--scored-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--estimator", required=True, help="the joblib estimator")
    parser.add_argument("--datadir", required=True)
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # Faust's worker must not see our options

    estimator = joblib.load(args.estimator)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.broker}",
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        topic_partitions=4,
        web_enabled=False,
        datadir=args.datadir,
        autodiscover=False,
    )
    source = app.topic(args.data_topic, key_type=bytes, value_type=bytes)
    sink = app.topic(args.scored_topic, key_type=bytes, value_type=bytes)

    @app.agent(source)
    async def score(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            doc = orjson.loads(value)
            label = int(estimator.predict([doc["features"]])[0])
            scored = {"id": doc["id"], "model": "wine", "version": "1", "label": label}
            await sink.send(key=str(doc["id"]).encode(), value=orjson.dumps(scored))

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
