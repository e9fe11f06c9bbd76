"""A python3-http function: squares a number."""


def handle(event, context):
    try:
        number = int(event.body)
    except ValueError:
        return {"statusCode": 400, "body": f"not a whole number: {event.body!r}"}
    return str(number * number)
