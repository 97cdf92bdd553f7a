"""What several test packages share: builders of a sandbox world, attacking nodes."""
