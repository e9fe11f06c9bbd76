def handle(event, context):
    text = event.body.decode().strip()
    if text == "ok":
        return {"statusCode": 200, "body": "ok", "headers": {"Content-Type": "text/plain"}}
    return {"statusCode": 422, "body": f"rejected <{text}>: send ok",
            "headers": {"Content-Type": "text/plain"}}
