"""cubeqa's front door: settings and the command line."""
