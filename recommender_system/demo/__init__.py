"""The ecoseller demo data (bundled, MIT) and its loader: ``python -m recommender_system load-demo``."""
