"""``pvpython pv_partitions.py PORT``: connect to a pvserver and print ``partitions N``, the
number of data partitions (MPI ranks) the server reports to its client."""

import sys

from paraview import servermanager, simple  # type: ignore[import-not-found]


def main() -> int:
    simple.Connect("localhost", int(sys.argv[1]), timeout=60)
    print(f"partitions {servermanager.ActiveConnection.GetNumberOfDataPartitions()}", flush=True)
    # Something rendered on every rank: the ranks really serve, not just count.
    sphere = simple.Sphere()
    simple.Show(simple.ProcessIdScalars(Input=sphere))
    simple.Render()
    simple.Disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
