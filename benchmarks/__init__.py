"""emocam benchmarks: model throughput, pipeline frames/s against the original notebook loop.

Run ``benchmark`` (or ``python -m benchmarks``); ``benchmark --quick`` for a short run. Each run
writes a JSON file and a PNG chart to ``benchmarks/results`` (see :mod:`benchmarks.run`).
"""
