"""Performance runs against peers (not part of the test run)."""
