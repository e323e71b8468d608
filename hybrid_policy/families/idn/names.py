"""The inference delivery network's placement modes: INFIDA (``idn``) and its baselines. No imports: every module of the family
may name them."""

MODES = ("idn", "idn_static", "idn_greedy", "idn_cloud", "idn_robot")
