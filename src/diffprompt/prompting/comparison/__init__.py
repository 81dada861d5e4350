"""The comparison: rows (a method plus options), the runs of every cell, its tables and charts."""
