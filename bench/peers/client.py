"""The one load generator of bench_peers.py: NVIDIA's tritonclient, asyncio gRPC client, KServe
v2 ModelInfer with ``raw_input_contents`` (tritonclient's default for numpy data). Runs in its
own venv (tritonclient needs grpcio >= 1.67, newer than fpga-serve's pin).

    python client.py

Reads one JSON command per line on stdin and answers on stdout:
  {"address": "127.0.0.1:PORT", "inflight": N, "seconds": S, "requests": R}
    -> "warm" after a warm-up (N requests in flight, twice over), then waits for a "go" line,
       runs N requests in flight back to back for S seconds (at most R in all), prints "done"
       at once, then one JSON line: {"n", "elapsed", "p50", "p99" (ms), "errors", "max_error"}.
One InferenceServerClient (one channel) per address, kept for the whole run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import tritonclient.grpc.aio as aioclient
from trivial import INPUT, MODEL, OUTPUT, expected, request_image

IMAGE = request_image()
WANT = expected(IMAGE)


async def line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def one(client: Any, inputs: list[Any], outputs: list[Any]) -> float:
    """One call; returns the largest deviation of its answer from the expected one."""
    result = await client.infer(MODEL, inputs, outputs=outputs)
    got = result.as_numpy(OUTPUT)
    return float(np.max(np.abs(got - WANT)))


async def window(client: Any, inflight: int, seconds: float, requests: int) -> dict[str, Any]:
    inp = aioclient.InferInput(INPUT, list(IMAGE.shape), "UINT8")
    inp.set_data_from_numpy(IMAGE)
    inputs, outputs = [inp], [aioclient.InferRequestedOutput(OUTPUT)]
    worst = 0.0
    for _ in range(2):
        worst = max(
            [worst, *await asyncio.gather(*(one(client, inputs, outputs) for _ in range(inflight)))]
        )
    say("warm")
    if (await line()).strip() != "go":
        raise SystemExit("expected go")
    latencies: list[float] = []
    errors = 0
    left = [requests]
    perf = time.perf_counter
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors
        while left[0] > 0 and time.monotonic() < end:
            left[0] -= 1
            t0 = perf()
            try:
                await client.infer(MODEL, inputs, outputs=outputs)
            except Exception:  # counted, not timed
                errors += 1
                continue
            latencies.append(perf() - t0)

    t0 = perf()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed = perf() - t0
    say("done")
    latencies.sort()
    n = len(latencies)
    return {
        "n": n,
        "elapsed": elapsed,
        "p50": latencies[n // 2] * 1000 if n else 0.0,
        "p99": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0,
        "errors": errors,
        "max_error": worst,
    }


async def main() -> None:
    clients: dict[str, Any] = {}
    say("ready")
    while True:
        text = await line()
        if not text:
            break
        cmd = json.loads(text)
        address = cmd["address"]
        if address not in clients:
            clients[address] = aioclient.InferenceServerClient(url=address)
        stats = await window(clients[address], cmd["inflight"], cmd["seconds"], cmd["requests"])
        say(json.dumps(stats))
    for client in clients.values():
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
