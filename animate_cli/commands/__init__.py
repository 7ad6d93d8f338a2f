"""The CLI's commands beyond the main job; ``animate_cli.cli`` assembles them into one app."""
