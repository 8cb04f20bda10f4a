"""What every floor of the project may use: errors, atomic I/O, seeding, device selection and
declared parameters. It imports nothing of the project but itself."""
