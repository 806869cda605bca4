from prism_backends.cli.main import main

main()
