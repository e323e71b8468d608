"""RoCoIn's modes: redundant distilled students (``rocoin``) and the baselines without
redundancy, with random groups, or with the target on every device. No imports: every module of the family
may name them."""

MODES = ("rocoin", "rocoin_single", "rocoin_random", "rocoin_target")
