"""The early-exit family's modes: one net split across robot, edge and cloud
(``early_exit``), DTO-EE's joint offloading and thresholds (``dto_ee``) and the
baselines. No imports: every module of the family
may name them."""

MODES = ("early_exit", "dto_ee", "ee_fixed", "ee_random", "cloud_only")
