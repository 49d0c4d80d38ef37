"""The daemon profiles by name: which daemons a process runs (zeroloop.daemons.table), and which run jobs.

Named once here, in a module that imports nothing, so that the settings, the daemon
table and the CLI's help all read the same names without loading one another.
"""

PROFILES = ("coordinator", "training_node", "ephemeral", "selfplay", "minimal", "full")
WORKER_PROFILES = ("training_node", "ephemeral", "selfplay")  # the profiles whose machines run jobs
