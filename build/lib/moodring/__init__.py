"""moodring: the `moodring` command, which dispatches to `training`, `model` and `bot`."""
