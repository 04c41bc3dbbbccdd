"""How ofa runs: accelerate configs, job specs and the local dev stack (S3 + STAC API on 127.0.0.1)."""
