"""`python -m benchmarks [quick=true] [rows=...] [write=BENCHMARKS.md]`, run from the repository root."""

import sys

from benchmarks.harness import main

sys.exit(main())
