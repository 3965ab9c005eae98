"""MLflowApproveModelOperator: a human approves or rejects a challenger before it becomes champion.

An Airflow Human-in-the-loop ApprovalOperator (providers-standard): the run waits in
"awaiting input" until someone answers in the UI (Browse → Required actions) or through
`PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails`.
The answer is written to the registry: the version gets decision/decided_by/decision_reason
tags and the model's audit trail an "approve" or "reject" entry. Reject skips the promotion,
so the challenger stays unpromoted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param

from airflow_mlops.boundary import TaskBoundary

if TYPE_CHECKING:
    from airflow.sdk import Context

BODY = """\
**{model} v{{{{ ti.xcom_pull(task_ids='{register}')['version'] }}}}** is waiting for approval to become champion.

{{{{ ti.xcom_pull(task_ids='{evaluate}')['summary'] }}}}

| | |
|---|---|
| Evaluation verdict | {{{{ 'promote' if ti.xcom_pull(task_ids='{evaluate}')['promote'] else 'hold' }}}} |
| Compared with champion | v{{{{ ti.xcom_pull(task_ids='{evaluate}')['champion_version'] or 'none (first model)' }}}} |
| Evaluation report | {{{{ ti.xcom_pull(task_ids='{evaluate}')['report_uri'] }}}} |
| Model card | {{{{ ti.xcom_pull(task_ids='{card}')['html_uri'] }}}} |

Approve to promote it; Reject keeps the current champion. Give a reason: it is kept in the registry's audit trail.
"""


def approval_body(model: str, *, register: str = "register", evaluate: str = "evaluate",
                  card: str = "model_card") -> str:
    """Markdown (Jinja-templated) shown in the Required actions page; task ids of the chain."""
    return BODY.format(model=model, register=register, evaluate=evaluate, card=card)


def responder_name(user: Any) -> str:
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "unknown")
    return str(getattr(user, "name", None) or user or "unknown")


class MLflowApproveModelOperator(TaskBoundary, ApprovalOperator):
    """Ask a human to approve the registered challenger; record who decided and why in MLflow.

    OpenLineage: no datasets and no OpenLineage method of ours: a decision reads and writes no data (it
    is tags on the version), so the provider reports the task run alone.

    :param model_name: registered model name.
    :param version: the registered challenger version, e.g. "{{ ti.xcom_pull('register')['version'] }}". (templated)
    :param evaluation: the evaluation task's result; when it does not recommend promotion nobody is
        asked: the task skips (and so does the promotion) and the version is tagged not_promoted. (templated)
    :param registered: the register task's result; a repeat (nothing new registered) skips without asking
        anyone and without writing to the registry. (templated)
    :param response_timeout: how long to wait (spec `promotion.approval_timeout`); unanswered = task fails.
    :param mlflow_conn_id: Airflow connection of type "mlflow".
    Other arguments (subject, body, assigned_users, notifiers) as ApprovalOperator; subject and body
    default to a summary of the evaluation with links to its report and the model card.
    """

    template_fields = (*ApprovalOperator.template_fields, "version", "evaluation", "registered")

    def __init__(self, *, model_name: str, version: str, evaluation: Any = None, registered: Any = None,
                 mlflow_conn_id: str = "mlflow_default", response_timeout: timedelta | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("subject", f"Promote {model_name} to champion?")
        kwargs.setdefault("body", approval_body(model_name))
        kwargs.setdefault("params", {"reason": Param("", type="string", title="Reason",
                                                     description="Why; kept in the model's audit trail")})
        super().__init__(response_timeout=response_timeout, **kwargs)
        self.model_name = model_name
        self.version = version
        self.evaluation = evaluation
        self.registered = registered
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> Any:
        from airflow_mlops.core.xcom import as_dict
        from airflow_mlops.operators.registry import skip_if_repeat

        skip_if_repeat(self.registered, "approval")
        evaluation = None if self.evaluation is None else as_dict(self.evaluation)
        if evaluation is not None and not evaluation.get("promote"):
            from airflow_mlops.operators.promotion import skip_not_promoted

            skip_not_promoted(self.mlflow_conn_id, self.model_name, str(self.version), evaluation, context)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" not in event:
            approved = self.APPROVE in (event.get("chosen_options") or [])
            reason = str((event.get("params_input") or {}).get("reason") or "")
            self._record(context, approved, responder_name(event.get("responded_by_user")), reason)
        return super().execute_complete(context=context, event=event)

    def _record(self, context: Context, approved: bool, who: str, reason: str) -> None:
        from airflow_mlops.core import audit
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.hooks.mlflow_registry import CHAMPION, ModelRegistry
        from airflow_mlops.operators.promotion import trigger_of

        decision = "approve" if approved else "reject"
        version = str(self.version)
        with MLflowHook(self.mlflow_conn_id).activated() as client:
            registry = ModelRegistry(client, self.model_name)
            registry.tag_decision(version, "approved" if approved else "rejected", who, reason)
            dag_run = context.get("dag_run")
            registry.record(audit.AuditEvent(
                action=decision, version=version, previous=registry.alias_version(CHAMPION), actor=who,
                trigger=trigger_of(context), dag_id=getattr(dag_run, "dag_id", None),
                run_id=context.get("run_id"), at=audit.now_iso(), reason=reason or "(no reason given)",
            ))
        self.log.info("%s v%s %sed by %s: %s", self.model_name, version, decision, who, reason or "(no reason)")
