"""The store: SQLAlchemy tables for sweeps, runs, attempts and metrics, and their ingestion."""
