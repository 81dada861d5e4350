"""The methods: one registry entry per method, and their defaults per data set."""
