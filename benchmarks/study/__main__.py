import sys

from benchmarks.study.run import main

sys.exit(main())
