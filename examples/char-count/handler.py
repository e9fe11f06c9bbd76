"""A python3-http function: counts the letters of a text."""


def handle(event, context):
    text = event.body.decode()
    return {"statusCode": 200, "body": {"letters": sum(c.isalpha() for c in text)}}
