"""A python3-http function: title-cases the text it is given."""


def handle(event, context):
    name = event.body.decode().strip() or "world"
    return {"statusCode": 200, "body": name.title(), "headers": {"Content-Type": "text/plain"}}
