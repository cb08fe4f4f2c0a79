"""``paraview --script gui_shot.py`` (the GUI, connected by then): a sphere rendered on the
server, saved where ``PARACONNECT_SHOT`` says."""

import os

from paraview import servermanager, simple  # type: ignore[import-not-found]

assert servermanager.ActiveConnection.IsRemote()
simple.Show(simple.Sphere(ThetaResolution=48, PhiResolution=48, Radius=0.5))
view = simple.GetActiveViewOrCreate("RenderView")
view.Background = [0.1, 0.1, 0.3]
simple.Render()
simple.SaveScreenshot(os.environ["PARACONNECT_SHOT"], view, ImageResolution=[320, 240])
