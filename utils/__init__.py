"""Small shared helpers: errors, atomic I/O, seeding, device selection, the shared CLI."""
