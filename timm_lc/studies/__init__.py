"""Studies, benchmarks and the GPU check: what measures the library rather than being it."""
