"""The fleet's shared plumbing: settings, CLI, migrations, embedded dev services."""
