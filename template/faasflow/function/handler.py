"""A faasflow flow. `faasflow run .` runs it locally; `faas-cli up` deploys it."""


def define(flow, context):
    dag = flow.dag()
    dag.node("hello").modify(lambda data: b"Hello " + (data or b"world"))
    dag.node("shout").modify(lambda data: data.upper())
    dag.edge("hello", "shout")
