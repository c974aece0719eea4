"""What a user writes: the validated model of stack config, zone records and imports."""
