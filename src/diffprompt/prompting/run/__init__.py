"""One prompting run: its config, data, training loop, scoring and run folder; the methods' runners."""
