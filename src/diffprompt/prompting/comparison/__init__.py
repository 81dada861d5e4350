"""The comparison: rows (a method plus options), the grid of runs, its tables and charts."""
