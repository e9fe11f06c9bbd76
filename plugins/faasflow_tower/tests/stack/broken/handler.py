"""broken: load -> check (the function `reject` refuses anything but "ok") -> store."""


def define(flow, context):
    dag = flow.dag()
    dag.node("load").modify(lambda data: data.strip())
    dag.node("check").apply("reject")
    dag.node("store").modify(lambda data: b"stored " + data)
    dag.edge("load", "check")
    dag.edge("check", "store")
