"""Storage: where inputs and outputs live (local files; S3-compatible later), keyed by taskUUID."""
