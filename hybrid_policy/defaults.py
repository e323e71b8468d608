"""Defaults shared by every entry point (CLI, nodes, launch). No heavy imports: the launch
file and argument parsing read them without loading torch."""

# Codes are sampled at temperature 0.5 by default: sharper code distributions make both
# policies more successful and make them agree more often (docs/policies.md has the figures).
DEFAULT_TEMPERATURE = 0.5
DEFAULT_LINK = "5g_embb"
DEFAULT_DEADLINE_MS = 100.0
DEFAULT_MODELS = "models"  # root of the default models and their calibrations
DRAFT_DIR = "draft"  # MODELS/TASK/draft: the draft trained on the demonstrations
