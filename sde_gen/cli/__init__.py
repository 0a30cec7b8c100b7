"""What the command lines share: one-line errors (``errors``), typed settings (``settings``),
objects built from config groups and probed before a run (``build``), and Hydra callbacks
(``callbacks``: the ``latest`` link, the run-folder guard, collecting a sweep), and the
end of a run (``run``: close the process group, log the summary line); the console scripts and
their modules (``commands``)."""
