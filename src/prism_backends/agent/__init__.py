"""The reference agent: what runs inside a CVM and dials in to the agents endpoint."""

# The files the agent needs to run, relative to the source root: what guest
# images and cloud user data carry (with gRPC and protobuf beside them).
MODULES = (
    "prism_backends/__init__.py",
    "prism_backends/agent/__init__.py",
    "prism_backends/agent/__main__.py",
    "prism_backends/agent/client.py",
    "prism_backends/agent/config.py",
    "prism_backends/agent/evidence.py",
    "prism_backends/agents/__init__.py",
    "prism_backends/agents/proto/__init__.py",
    "prism_backends/agents/proto/cvms_pb2.py",
    "prism_backends/agents/proto/cvms_pb2_grpc.py",
)
