"""The face of BrainEdge: the ``brainedge`` command line (click), one module per stage.

Nothing below ``cli`` imports it: the stages and the shared ground (``brainedge``) stay
usable as libraries.
"""
