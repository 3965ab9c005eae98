"""Jobs: the work a task does, runnable in-process (operators) or in a pod (`airflow-mlops <job>`).

A job takes a JSON-able request and an MLflow hook and returns a JSON-able result, so the same
code runs inside an Airflow worker and inside a Kubernetes pod started by KubernetesPodOperator.
"""
