from prism_backends.cli.main import app

app()
