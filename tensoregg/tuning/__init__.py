"""Auto-tuning: measured refinement of the schedules the cost model picks.

``records`` holds the tuning records (SQLite), ``measure`` times candidates in worker processes,
``cluster`` on the machines of a Ray cluster, ``search`` is the tuning loop (``tensoregg.tune``,
``tensoregg tune``), ``learned`` the learned cost model that orders a kernel's candidates;
``compile`` reads the records through ``records.measured_pricing``.
"""
