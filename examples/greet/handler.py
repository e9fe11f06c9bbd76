"""greet: a sync flow. One node: the whole request runs inside the first call, so the greeting
comes back in the response."""


def define(flow, context):
    flow.sync_node().apply("title").modify(lambda name: f"Hello {name.decode()}!")
