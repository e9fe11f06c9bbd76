"""slow: prepare -> nap (sleeps the seconds in the body) -> finish."""


def define(flow, context):
    dag = flow.dag()
    dag.node("prepare").modify(lambda data: data or b"1.5")
    dag.node("nap").apply("nap")
    dag.node("finish").modify(lambda data: b"slept " + data)
    dag.edge("prepare", "nap")
    dag.edge("nap", "finish")
