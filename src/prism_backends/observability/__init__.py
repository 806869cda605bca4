"""What an operator sees of the service: Prometheus metrics (``instruments``,
``exposition``, ``store``, ``latency``), the request id and the JSON log
format (``context``, ``logs``), and the HTTP hooks (``middleware``,
``endpoints``)."""
