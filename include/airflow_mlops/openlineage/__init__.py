"""OpenLineage support of our operators: what `execute` kept (`record`, stdlib only) and the datasets and
facets built from it when the provider asks (`datasets`, imports `openlineage-python`). Naming is
`core.lineage_names`; the scheme is docs/lineage.md. Not an Airflow provider section (no operators here)."""
