import sys

from texture_nets.cli import main

sys.exit(main())
