"""Plain-Python core: spec parsing, data, training and lineage logic. No Airflow operators here."""
