import sys

from vit.train.cli import main

sys.exit(main())
