"""The web console: static files (no build step) served by the API process,
and the one-time sign-in link that ``serve`` prints for a newcomer."""
