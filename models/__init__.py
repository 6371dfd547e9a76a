"""The models that ship with BrainEdge, installed as the package ``brainedge_models``.

One folder per architecture, each an artifact made by ``brainedge optimize`` and shipped by
``brainedge ship``: ``manifest.json``, the model file, and ``card.json`` (what
``MODEL_CARD.md`` reports about it). Code finds them through ``runtime.shipped``.
"""
