import sys

from pfdm_core.core import omp

omp.apply()  # before torch loads (pfdm_core.core.omp)

from pfdm_core.cli import main  # noqa: E402

sys.exit(main())
