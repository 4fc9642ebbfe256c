"""The live window's panels (pyqtgraph), one module each: traces, cursor, latency, and the image
panel that shows ζ (zeta) or the spike raster (raster). `plot.window` assembles them and owns the
streams; each panel only draws what it is handed."""
