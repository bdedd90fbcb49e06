"""Fake pipelines for the observability tests (module-level factories: picklable for spawn)."""

from __future__ import annotations

from typing import Any

from tests.sdk.fast_pipeline import FastFakePipeline
from tests.worker.fixture_pipelines import Broken

# What a CUDA pipeline's memory_stats() reports (WanVideoPipeline.memory_stats, bytes).
GPU_STATS = {"device": "cuda:0", "allocated": 1_000_000, "reserved": 2_000_000, "peak_allocated": 3_000_000,
             "device_used": 4_000_000, "device_total": 80_000_000_000}


class GpuReporting(FastFakePipeline):
    def memory_stats(self) -> dict[str, object]:
        return dict(GPU_STATS)


def gpu_reporting(settings: Any) -> GpuReporting:
    return GpuReporting()


def broken(settings: Any) -> Broken:
    return Broken()
