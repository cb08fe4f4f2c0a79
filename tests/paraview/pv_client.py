"""A pvpython client for the tests: connect to a pvserver (forward) or accept one that dials in
(reverse), render a sphere on the server, save a screenshot.

    pvpython --connect-id=N pv_client.py connect PORT OUT.png
    pvpython --connect-id=N pv_client.py accept PORT OUT.png

Run under Xvfb: Debian's ParaView client crashes at its first render without a display.
Prints `partitions N` (the server's MPI ranks) once connected, and `rendered OUT.png` on
success.
"""

import sys

from paraview import servermanager, simple  # type: ignore[import-not-found]


def main() -> int:
    mode, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "connect":
        simple.Connect("localhost", port, timeout=60)
    else:
        # 5.11 wants the port as a string, and aborts the process after 60 s without a server
        # (FACTS.md): the tests always start one.
        simple.ReverseConnect(str(port))
    print(f"partitions {servermanager.ActiveConnection.GetNumberOfDataPartitions()}", flush=True)
    sphere = simple.Sphere(ThetaResolution=48, PhiResolution=48, Radius=0.5)
    simple.Show(sphere)
    view = simple.GetActiveViewOrCreate("RenderView")
    view.Background = [0.1, 0.1, 0.3]
    simple.Render()
    simple.SaveScreenshot(out, view, ImageResolution=[320, 240])
    print(f"rendered {out}", flush=True)
    simple.Disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
