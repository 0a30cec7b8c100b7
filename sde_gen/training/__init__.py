"""A training run: its typed settings (``settings``), the loop (``loop``), the run around it
(``trainer``: checkpoints, report, resume), what it writes (``report``), who owns its folder
(``run_folder``) and the checkpoint file format (``checkpoint``)."""
