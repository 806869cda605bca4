"""prism-backends: the control plane for confidential virtual machines."""

__version__ = "0.1.0"
