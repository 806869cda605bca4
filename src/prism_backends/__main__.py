from prism_backends.cli.entry import main

main()
