"""A python3-http function: counts the words of a text."""


def handle(event, context):
    words = event.body.decode().split()
    return {"statusCode": 200, "body": {"words": len(words)}}
