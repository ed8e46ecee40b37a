"""Where units of work run: ``local`` (this process, the default) or ``ray`` (tasks on a Ray cluster).

``spec.py`` is the choice itself (importable without Ray, torch or numpy: the CLI builds it while parsing);
``ray_session.py`` connects to or starts a Ray instance; ``ray_map.py`` streams the results of many tasks back
(progress bar, bounded window, retries of tasks whose worker died); ``folders.py`` makes large read-only folders
(exports, float graphs, model folders) visible to workers: the same path on one machine, the object store across
machines.
"""
