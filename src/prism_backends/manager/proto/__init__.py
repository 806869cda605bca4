"""Generated gRPC code of the manager protocols (see scripts/gen-proto)."""
