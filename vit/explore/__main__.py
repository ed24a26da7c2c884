from vit.explore.cli import main

main()
