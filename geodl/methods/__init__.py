"""Per-job method registries (``name -> config section + functions``), used by the tasks and by
the Python API alike. See :mod:`geodl.methods.mapping` for the recipe to add a method."""
