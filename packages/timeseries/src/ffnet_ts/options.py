"""Option values shared by the CLI and the training loop, importable without torch.

``ffnet-ts --help`` (and an argparse usage error) builds its parser from these alone, so it answers in a fraction
of a second instead of after importing torch and ffnet-core (6-7 s here).
"""

LR_SCHEDULES = ("official", "type3", "type1", "onecycle", "cosine", "constant")
LOSSES = ("mse", "mae", "huber")
PRECISIONS = ("fp32", "bf16")
