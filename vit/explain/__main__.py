from vit.explain.cli import main

main()
