"""`make bench`: benchmarks that print a table and write bench/results/*.json.

They are measurements, not tests: nothing here gates CI.
"""
