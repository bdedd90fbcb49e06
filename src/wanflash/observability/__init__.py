"""Operations: Prometheus metrics and structured logs (no torch, importable from every layer)."""
