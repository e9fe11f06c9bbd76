"""squares: a foreach. The input ``1,2,3`` becomes one branch per number, run in parallel; each
branch calls the python3-http function ``square``; the aggregator adds the results up."""


def define(flow, context):
    dag = flow.dag()
    dag.node("parse").modify(lambda data: data.decode().replace(" ", ""))
    branch = dag.foreach_branch("each", split, aggregator=total)
    branch.node("square").apply("square")
    dag.edge("parse", "each")


def split(data):
    return {str(i): number for i, number in enumerate(data.decode().split(",")) if number}


def total(results):
    squares = [int(results[key]) for key in sorted(results, key=int)]
    return f"{' + '.join(map(str, squares))} = {sum(squares)}"
