import sys

from codescaler.cli import main

sys.exit(main())
