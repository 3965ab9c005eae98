"""Prints prometheus_client's mode after Feast's metrics module was imported: `<mode> <variable exported?>`.

argv[1] "pinned": our entry points' privacy.disable_telemetry() runs first, as in the CLI, operators and server.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    if sys.argv[1] == "pinned":
        from airflow_mlops import privacy

        privacy.disable_telemetry()
    import feast.metrics  # noqa: F401 - exports PROMETHEUS_MULTIPROC_DIR (Feast 0.67)
    from prometheus_client import values

    mode = "multiprocess" if getattr(values.ValueClass, "_multiprocess", False) else "single"
    print(mode, "PROMETHEUS_MULTIPROC_DIR" in os.environ)


if __name__ == "__main__":
    main()
