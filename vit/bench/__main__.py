import sys

from vit.bench.cli import main

sys.exit(main())
