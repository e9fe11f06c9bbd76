r"""report: an asynchronous DAG. ``clean`` feeds two branches that run in parallel (each calls a
python3-http function); ``summary`` waits for both and merges their answers with an aggregator.

    clean --> words ----\
          \--> letters --> summary
"""

import json


def define(flow, context):
    dag = flow.dag()
    dag.node("clean").modify(lambda text: " ".join(text.decode().split()))
    dag.node("words").apply("word-count")
    dag.node("letters").apply("char-count")
    dag.node("summary", aggregator=merge)
    dag.edge("clean", "words")
    dag.edge("clean", "letters")
    dag.edge("words", "summary")
    dag.edge("letters", "summary")


def merge(outputs):
    """Both branches answer a JSON object; the report is their union."""
    report = {}
    for output in outputs.values():
        report.update(json.loads(output))
    return json.dumps(report, sort_keys=True)
