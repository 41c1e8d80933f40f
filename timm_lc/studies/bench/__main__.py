import sys

from ...commands.bench import main

sys.exit(main())
